"""torchrun on CPU with gloo: 2 processes equal 1 with the same global batch (DDP and FSDP2), SIGTERM to the
launcher saves once and resumes exactly (on 2 processes and on 1), a SIGKILLed rank makes the other exit with
one line within --dist-timeout, and the refusals."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from philora.training.checkpoint import list_checkpoints, load_training_state
from philora.training.distributed import Distributed, open_distributed
from philora.training.errors import TrainingError
from philora.training.run import main

REPO = Path(__file__).resolve().parents[2]
# fp32 and no dropout: then 2 processes can equal 1 (dropout masks are drawn per rank).
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
    "2",
    "--lora-dropout",
    "0",
    "--lr",
    "1e-3",
    "--dist-timeout",
    "30",
]
TOLERANCE = 1e-5


def _torchrun(out: Path, *extra, popen: bool = False):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "train.py"),
        *ARGS,
        "--output-dir",
        str(out),
        *extra,
    ]
    if popen:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)


def _max_difference(a: Path, b: Path) -> float:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    return max((json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")), default=0)


def _wait_for(condition, procs, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
            raise AssertionError("training did not get far enough in time")
        time.sleep(0.05)


def _fsdp2_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method  # noqa: F401
    except ImportError:
        return False
    return torch.distributed.is_gloo_available()


@pytest.mark.parametrize(
    "mode, accum",
    [
        ("ddp", 2),
        pytest.param(
            "fsdp",
            1,
            marks=pytest.mark.skipif(
                not _fsdp2_available(), reason="this PyTorch has no FSDP2 (fully_shard) or no gloo"
            ),
        ),
    ],
)
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, capsys, mode, accum):
    steps = ["--max-steps", "3", "--save-every", "2"]
    single = tmp_path / "single"
    assert main([*ARGS, *steps, "--output-dir", str(single), "--grad-accum", str(2 * accum)]) == 0
    capsys.readouterr()
    out = tmp_path / mode
    result = _torchrun(out, *steps, "--grad-accum", str(accum), *(["--fsdp"] if mode == "fsdp" else []))
    assert result.returncode == 0, result.stderr[-3000:]
    difference = _max_difference(out / "adapter.safetensors", single / "adapter.safetensors")
    assert difference <= TOLERANCE, difference
    assert result.stdout.count("training 3 steps") == 1  # only rank 0 prints
    assert f"2 processes ({'FSDP2' if mode == 'fsdp' else 'DDP'}, gloo)" in result.stdout
    # The checkpoint holds whole (gathered) tensors, the single-process layout, plus every rank's RNG.
    mine, theirs = (load_training_state(list_checkpoints(d)[-1]) for d in (out, single))
    moments = max(
        (mine["optimizer"]["state"][i]["exp_avg"] - theirs["optimizer"]["state"][i]["exp_avg"]).abs().max().item()
        for i in theirs["optimizer"]["state"]
    )
    assert moments <= TOLERANCE
    assert mine["extra"]["distributed"]["world_size"] == 2 and len(mine["extra"]["distributed"]["rank_rng"]) == 2
    losses = [
        [r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())] for d in (out, single)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # the logged loss is the all-rank mean


def test_sigterm_to_torchrun_saves_once_and_resume_equals_uninterrupted(tmp_path, capsys):
    total = ["--max-steps", "24", "--save-every", "1000"]
    reference = tmp_path / "reference"
    assert main([*ARGS, *total, "--output-dir", str(reference), "--grad-accum", "2"]) == 0
    capsys.readouterr()

    out = tmp_path / "run"
    launcher = _torchrun(out, *total, popen=True)
    _wait_for(lambda: _last_step(out) >= 2, [launcher])
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=90)
    assert stdout.count("SIGTERM received: checkpoint saved") == 1, stderr[-3000:]
    assert "[rank" not in stderr and "error:" not in stderr  # the workers stopped cleanly (torchrun reports its signal)
    (checkpoint,) = list_checkpoints(out)  # one checkpoint, at the step both ranks agreed on
    stopped = load_training_state(checkpoint)["step"]
    assert 2 <= stopped < 24 and stopped == _last_step(out)

    on_one = tmp_path / "on-one"
    shutil.copytree(out, on_one)
    resumed = _torchrun(out, *total, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _max_difference(out / "adapter.safetensors", reference / "adapter.safetensors") <= TOLERANCE

    # One process with twice the accumulation keeps the global batch: resuming there is allowed and exact too.
    resume_one = [*ARGS, *total, "--output-dir", str(on_one), "--resume", "latest"]
    assert main([*resume_one, "--grad-accum", "1"]) == 2
    assert "pass --grad-accum 2" in capsys.readouterr().err
    assert main([*resume_one, "--grad-accum", "2"]) == 0
    assert _max_difference(on_one / "adapter.safetensors", reference / "adapter.safetensors") <= TOLERANCE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigkill_of_one_rank_makes_the_other_exit_within_the_timeout_with_one_line(tmp_path, capsys):
    out, timeout_s = tmp_path / "run", 20
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2", OMP_NUM_THREADS="1")
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "train.py"),
                *ARGS,
                "--output-dir",
                str(out),
                "--max-steps",
                "400",
                "--save-every",
                "2",
                "--dist-timeout",
                str(timeout_s),
            ],
            cwd=REPO,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    _wait_for(lambda: len(list_checkpoints(out)) >= 1 and _last_step(out) >= 3, ranks)
    ranks[1].kill()
    killed_at = time.monotonic()
    _, stderr = ranks[0].communicate(timeout=timeout_s + 30)
    assert time.monotonic() - killed_at < timeout_s + 10
    ranks[1].communicate()
    assert ranks[0].returncode == 2
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("step ")]  # progress lines
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: lost the other training processes"), stderr[-3000:]
    # The run continues from its last complete checkpoint (here on one process, the same global batch).
    last = load_training_state(list_checkpoints(out)[-1])["step"]
    assert (
        main([*ARGS, "--output-dir", str(out), "--max-steps", str(last + 2), "--grad-accum", "2", "--resume", "latest"])
        == 0
    )
    assert load_training_state(list_checkpoints(out)[-1])["step"] == last + 2


def test_refusals_before_any_process_group(tmp_path, capsys, monkeypatch):
    base = [*ARGS, "--output-dir", str(tmp_path / "run"), "--max-steps", "1"]
    assert main([*base, "--fsdp"]) == 2
    assert "--fsdp shards the model over the processes of a torchrun launch" in capsys.readouterr().err
    assert main([*base, "--dist-timeout", "0"]) == 2
    assert "--dist-timeout must be > 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = __import__("philora.training.config", fromlist=["parse_config"]).parse_config(
        [*base, "--fsdp", "--quantize", "nf4"]
    )
    with pytest.raises(TrainingError, match="FSDP2 cannot shard bitsandbytes 4-bit weights"):
        with open_distributed(cfg):
            pass
    assert not torch.distributed.is_initialized()


def test_resume_view_keeps_the_global_batch():
    payload = {
        "run_config": {"grad_accum": 1, "batch_size": 2},
        "batch_index": 3,
        "epoch": 0,
        "extra": {"distributed": {"world_size": 2}},
    }
    one = Distributed()  # a single process
    stored, current = one.resume_view(payload, {"grad_accum": 2, "batch_size": 2})
    assert "grad_accum" not in stored and "grad_accum" not in current and stored["batch_size"] == 2
    with pytest.raises(TrainingError, match="pass --grad-accum 2 to keep it"):
        one.resume_view(payload, {"grad_accum": 1, "batch_size": 2})
    four = Distributed(rank=0, world_size=4)  # 6 batches done do not split over 4 processes
    payload["run_config"]["grad_accum"] = 2
    with pytest.raises(TrainingError, match="do not split evenly over 4 processes"):
        four.resume_view(payload, {"grad_accum": 1, "batch_size": 2})
    same = Distributed(rank=0, world_size=2)
    assert same.resume_view(payload, {"grad_accum": 2}) == (payload["run_config"], {"grad_accum": 2})


# nccl on two GPUs (one rank per device): what the gloo tests above check, with the CUDA collectives.
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl DDP and FSDP2 need 2 CUDA devices")
CUDA_STEPS = ["--device", "cuda", "--max-steps", "6", "--save-every", "3"]


@pytest.mark.gpu
@two_gpus
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_nccl_two_processes_equal_one_with_the_same_global_batch(tmp_path, capsys, mode):
    single = tmp_path / "single"
    assert main([*ARGS, *CUDA_STEPS, "--output-dir", str(single), "--grad-accum", "2"]) == 0
    capsys.readouterr()
    out = tmp_path / mode
    result = _torchrun(out, *CUDA_STEPS, *(["--fsdp"] if mode == "fsdp" else []))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"2 processes ({'FSDP2' if mode == 'fsdp' else 'DDP'}, nccl)" in result.stdout
    assert _max_difference(out / "adapter.safetensors", single / "adapter.safetensors") <= TOLERANCE


@pytest.mark.gpu
@two_gpus
def test_nccl_fsdp2_resumes_exactly_and_trains_in_bf16(tmp_path):
    out = tmp_path / "fsdp"
    result = _torchrun(out, *CUDA_STEPS, "--fsdp")
    assert result.returncode == 0, result.stderr[-3000:]
    # Resume from the step-3 checkpoint (what came after it dropped) and finish: the same adapter.
    resumed = tmp_path / "fsdp-resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000006")
    (resumed / "adapter.safetensors").unlink()
    result = _torchrun(resumed, *CUDA_STEPS, "--fsdp", "--resume", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _max_difference(resumed / "adapter.safetensors", out / "adapter.safetensors") <= TOLERANCE
    bf16 = tmp_path / "fsdp-bf16"
    result = _torchrun(bf16, *CUDA_STEPS, "--fsdp", "--precision", "bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (bf16 / "adapter.safetensors").is_file()
