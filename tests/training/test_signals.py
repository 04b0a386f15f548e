"""Real signals against a real `python train.py` process: SIGINT/SIGTERM save and exit; SIGKILL then --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lora_core
import phi_models
from philora.training.checkpoint import list_checkpoints, load_training_state
from philora.training.run import main

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "32",
    "--max-seq-len",
    "96",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--log-every",
    "1",
    "--eval-every",
    "0",
    "--eval-batches",
    "1",
]


def _start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *ARGS, "--output-dir", str(out), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("train.py did not get far enough in time")
        time.sleep(0.05)


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_usable_checkpoint_and_exits_cleanly(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _start(out, "--max-steps", "400", "--save-every", "1000")
    _wait_for(lambda: _last_step(out) >= 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert f"{sig.name} received: checkpoint saved" in stdout
    (checkpoint,) = list_checkpoints(out)
    state = load_training_state(checkpoint)
    assert 3 <= state["step"] < 400 and checkpoint.name == f"step-{state['step']:06d}"
    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], r=16, lora_alpha=16)
    lora_core.load_adapter(model, checkpoint / "adapter.safetensors", strict=True)


def test_sigkill_then_resume_completes(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--max-steps", "400", "--save-every", "3")
    _wait_for(lambda: len(list_checkpoints(out)) >= 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last = list_checkpoints(out)[-1]
    resumed_from = load_training_state(last)["step"]
    target = resumed_from + 4
    assert (
        main([*ARGS, "--output-dir", str(out), "--max-steps", str(target), "--save-every", "3", "--resume", "latest"])
        == 0
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, target + 1))  # steps after the checkpoint were dropped and redone once
    assert (out / "adapter.safetensors").is_file()
    assert load_training_state(list_checkpoints(out)[-1])["step"] == target


# data.prepare made to hang, so the SIGTERM surely lands while the run is still loading.
_SLOW_LOADING = """
import sys, time
from philora import data
def hang(*args, **kwargs):
    print("LOADING", flush=True)
    time.sleep(60)
data.prepare = hang
from philora.training.run import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_loading_exits_143_with_one_line(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_LOADING, *ARGS, "--output-dir", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "LOADING"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert stderr.count("\n") == 1 and "terminated by SIGTERM" in stderr and "Traceback" not in stderr
    assert list_checkpoints(out) == []


def test_sigterm_while_importing_exits_143_with_one_line(tmp_path):
    proc = _start(tmp_path / "run", "--max-steps", "400")
    time.sleep(0.3)  # train.py is importing torch and the packages by now
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "SIGTERM" in stderr and "Traceback" not in stderr
