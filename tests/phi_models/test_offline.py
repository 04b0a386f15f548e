"""With no network, a hub request fails within seconds, on one line, with advice for the flag used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as probe:  # bind, note the port, close: nothing listens there afterwards
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "flags, advice",
    [
        (
            ["--model", "tiny", "--data", "someone/some-dataset"],
            "pass --data a local .jsonl/.json/.parquet/.csv/.tsv file",
        ),
        (["--model", "tiny", "--data", "roleplay"], "pass --data a local .jsonl/.json/.parquet/.csv/.tsv file"),
        (["--model", "someone/some-model", "--data", "samples/roleplay"], "pass --model a local directory"),
    ],
)
def test_no_network_fails_fast_on_one_line(tmp_path, flags, advice):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "train.py", *flags, "--output-dir", str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the hub could not be reached" in lines[0] and advice in lines[0], done.stderr
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr
    # the process start (torch import) dominates; huggingface_hub's own retries would add ~25 s
    assert took < 20, took
