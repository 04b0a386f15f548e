"""Faults against real processes: SIGKILL at random points of training and checkpoint writing (each
trial resumed to the uninterrupted run's adapter, bit for bit), and a disk that fills up during a
checkpoint (the previous checkpoint stays loadable, the message says the disk is full)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lora_core
from philora.training.checkpoint import list_checkpoints, load_training_state
from philora.training.run import main

REPO = Path(__file__).resolve().parents[2]
TRIALS = 20
SEED = 9


def test_sigkill_at_random_points_then_resume_is_bit_exact(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "training" / "fault_worker.py"), str(tmp_path), str(TRIALS), str(SEED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    trials, summary = records[:-1], records[-1]
    assert len(trials) == TRIALS and summary["failures"] == 0, "\n".join(map(json.dumps, trials))
    assert all(t["kill_status"] == -9 for t in trials)  # each run really died by SIGKILL
    assert any(t["resume"] == "--resume latest" for t in trials)  # kills landed after checkpoints too


ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "12",
    "--max-seq-len",
    "48",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
    "--val-fraction",
    "0",
    "--log-every",
    "100000",
    "--lora-r",
    "2",
    "--targets",
    "q_proj,v_proj",
    "--pad-multiple",
    "16",
]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (root only: mount needs it); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write one file until the disk is full; return it."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        block = b"\0" * (1 << 16)
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last partial pages too
        try:
            with open(filler, "ab") as handle:
                while True:
                    handle.write(b"\0" * size)
                    handle.flush()
        except OSError:
            pass
    return filler


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(small_disk, capsys):
    out = small_disk / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "philora",
            "train",
            *ARGS,
            "--output-dir",
            str(out),
            "--max-steps",
            "100000",
            "--save-every",
            "3",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not list_checkpoints(out):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        filler = _fill(small_disk)
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 2, stderr[-2000:]
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "the disk is full" in stderr, stderr
    kept = list_checkpoints(out)
    assert kept, "the previous checkpoint is gone"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]  # the partial one went
    state = load_training_state(kept[-1])
    assert state["step"] % 3 == 0
    # Space freed: the run continues from the kept checkpoint.
    filler.unlink()
    import phi_models

    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets=["q_proj", "v_proj"], r=2)
    lora_core.load_adapter(model, kept[-1] / "adapter.safetensors", strict=True)
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", str(state["step"] + 1), "--resume", "latest"]) == 0
