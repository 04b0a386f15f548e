"""Helpers shared by the post-training subcommands: one-line errors, output directories."""

from __future__ import annotations

import sys
from pathlib import Path


class CommandError(Exception):
    """A user error in a subcommand; printed as one line, exit 2."""


def fail(message: str) -> int:
    """Print ``philora: error: <message>`` on stderr and return exit code 2."""
    print(f"philora: error: {message}", file=sys.stderr, flush=True)
    return 2


def user_errors() -> tuple[type[BaseException], ...]:
    """The error classes whose messages are written for users (printed without a traceback)."""
    from lora_core import LoRAError
    from phi_models import HubError, PhiModelError
    from philora.data import DataError
    from philora.deploy import DeployError
    from philora.runs import RunError

    return (CommandError, RunError, LoRAError, PhiModelError, HubError, DataError, DeployError)


def fresh_out_dir(path: str) -> Path:
    """``--out``: a directory that does not exist yet or is empty (nothing existing is overwritten)."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CommandError(f"--out {out}: exists and is not an empty directory; pass a new directory")
    return out
