"""SIGKILL trials for tests/training/test_faults.py, run as its own process.

The worker imports philora once and then forks one child per training run, so a trial costs a run,
not a Python + torch start-up: each child is a real process that is really SIGKILLed. For every trial
it starts a run, kills it at a seeded random moment (half the trials at a moment a checkpoint is being
written), checks that every checkpoint left behind loads, resumes (``--resume latest``, or afresh
when nothing was saved) and compares the final adapter with an uninterrupted run's, bit for bit (every tensor byte and
the metadata).
Prints one JSON line per trial, then a summary line.

    python tests/training/fault_worker.py WORKDIR TRIALS SEED
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "8",
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
    "1",
    "--lora-r",
    "2",
    "--targets",
    "q_proj,v_proj",
    "--pad-multiple",
    "16",
    "--max-steps",
    "3",
    "--save-every",
    "1",
    "--keep-last",
    "2",
]
MAX_STEPS = 3


def fork_run(argv: list[str], log: Path) -> int:
    """Start ``training.run.main(argv)`` in a forked child (output into ``log``); return its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the worker's code
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import torch

            torch.set_num_threads(1)  # a tiny model: one thread is fastest, and the same in every child
            from philora.training.run import main

            code = main(argv)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def logged_steps(out: Path) -> int:
    """Training steps the run has logged so far (--log-every 1)."""
    try:
        return (out / "metrics.jsonl").read_bytes().count(b'"kind": "train"')
    except OSError:
        return 0


def wait_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def running(pid: int) -> bool:
    done, _ = os.waitpid(pid, os.WNOHANG)
    return done == 0


def adapter_bits(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (parsed header, tensor bytes): the header's JSON key order is not stable
    across processes (safetensors keeps the metadata in a hash map), the values and every tensor bit are."""
    import struct

    blob = path.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def main() -> int:
    workdir, trials, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # Imported before any fork, so children start warm (torch's optimizer pulls in torch._dynamo).
    import torch._dynamo  # noqa: F401

    import philora.training.run  # noqa: F401
    from philora.training.checkpoint import ADAPTER_FILE, list_checkpoints, load_training_state

    reference = workdir / "reference"
    started = time.monotonic()
    pid = fork_run([*ARGS, "--output-dir", str(reference)], workdir / "reference.log")
    training_started = None
    while running(pid):
        if training_started is None and (reference / "metrics.jsonl").exists():
            training_started = time.monotonic()
        time.sleep(0.002)
    ended = time.monotonic()
    expected = adapter_bits(reference / "adapter.safetensors")
    train_seconds = ended - (training_started or started)

    rng = random.Random(seed)
    failures = 0
    for trial in range(trials):
        out, log = workdir / f"trial-{trial:02d}", workdir / f"trial-{trial:02d}.log"
        kind = "checkpoint-write" if trial % 2 else "anywhere"
        pid = fork_run([*ARGS, "--output-dir", str(out)], log)
        while running(pid) and not (out / "metrics.jsonl").exists():
            time.sleep(0.001)
        if kind == "anywhere":  # after a random number of steps, at a random moment of the next one
            steps_done = rng.randint(0, MAX_STEPS - 1)
            while running(pid) and logged_steps(out) < steps_done:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, train_seconds / MAX_STEPS))
        else:  # while the n-th checkpoint is being written
            writes, wanted = set(), rng.randint(1, MAX_STEPS)
            root = out / "checkpoints"
            while running(pid) and len(writes) < wanted:
                if root.is_dir():
                    writes |= {p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))}
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.003))
        os.kill(pid, signal.SIGKILL)
        killed = wait_code(pid)
        left = [p.name for p in list_checkpoints(out)]
        loadable = all(
            load_training_state(p)["step"] == int(p.name[5:]) and (p / ADAPTER_FILE).is_file()
            for p in list_checkpoints(out)
        )
        extra = ["--resume", "latest"] if left else ["--overwrite"]
        code = wait_code(fork_run([*ARGS, "--output-dir", str(out), *extra], log))
        adapter = out / "adapter.safetensors"
        same = adapter.is_file() and adapter_bits(adapter) == expected
        ok = code == 0 and same and loadable
        failures += not ok
        print(
            json.dumps(
                {
                    "trial": trial,
                    "kind": kind,
                    "kill_status": killed,
                    "checkpoints_left": left,
                    "loadable": loadable,
                    "resume": " ".join(extra),
                    "exit": code,
                    "bit_exact": same,
                    "ok": ok,
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "summary": True,
                "trials": trials,
                "failures": failures,
                "reference_train_seconds": round(train_seconds, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
