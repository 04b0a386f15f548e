"""Shared fixtures for the philora command tests: one short training run on tiny (in-process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 4-step roleplay run on tiny; its adapter visibly changes greedy output."""
    from training.run import main

    out = tmp_path_factory.mktemp("runs") / "tiny-roleplay"
    argv = ["--model", "tiny", "--data", "samples/roleplay", "--limit", "24", "--max-seq-len", "96",
            "--batch-size", "4", "--device", "cpu", "--sample-tokens", "0", "--max-steps", "4", "--lr", "8e-3",
            "--warmup", "0", "--eval-every", "0", "--save-every", "0", "--precision", "fp32", "--output-dir", str(out)]
    assert main(argv) == 0
    return out


def run_cli(*args: str, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m philora ARGS`` from the repo root, text in and out."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "philora", *args], cwd=REPO, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)
