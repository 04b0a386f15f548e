"""A short tiny-model run shared by the eval / report / lm-eval tests: trained once per session, in-process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from philora.training.run import main as train_main

RUN_ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "48",
    "--max-seq-len",
    "128",
    "--val-fraction",
    "0.01",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "8",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--log-every",
    "2",
    "--lr",
    "3e-3",
    "--warmup",
    "2",
    "--max-steps",
    "8",
    "--eval-every",
    "4",
    "--save-every",
    "0",
    "--eval-generate",
    "3",
    "--eval-generate-tokens",
    "8",
]


@functools.cache
def trained_run_dir() -> Path:
    """A finished run directory: 8 steps, evaluations at steps 0/4/8 with generation metrics on 3 examples."""
    root = Path(tempfile.mkdtemp(prefix="philora-eval-run-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    out = root / "run"
    assert train_main([*RUN_ARGS, "--output-dir", str(out)]) == 0
    return out


def chromium_path() -> str | None:
    """Debian's chromium (.ci/run installs it), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")
