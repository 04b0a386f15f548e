"""Benchmark data-parallel training: tokens/s of ``train.py`` on 1 process and under torchrun on N.

Each configuration trains the ``tiny`` model on the bundled roleplay sample for the same number of
optimizer steps with the same global batch (1 process: ``--grad-accum N``; N processes: 1 each), in
a fresh run directory, and reads the throughput off the run's own summary line (input tokens of
all ranks / training seconds). Not a test.

    python bench/bench_distributed.py [--processes 2] [--steps 40] [--fsdp] [--device cpu]

On CPU, torchrun gives each process one thread (OMP_NUM_THREADS=1), while the single process
uses every core; the figures show what data parallelism buys on the cores at hand. They depend
on how loaded the machine is: quote them with that.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = re.compile(r"([\d,]+) tokens at ([\d,]+) tok/s")


def train_args(out: Path, steps: int, accum: int, device: str) -> list[str]:
    """train.py options of one measurement."""
    return [
        "--model",
        "tiny",
        "--data",
        "samples/roleplay",
        "--max-seq-len",
        "256",
        "--batch-size",
        "4",
        "--grad-accum",
        str(accum),
        "--max-steps",
        str(steps),
        "--eval-every",
        "0",
        "--save-every",
        "0",
        "--sample-tokens",
        "0",
        "--val-fraction",
        "0.02",
        "--lora-dropout",
        "0",
        "--device",
        device,
        "--precision",
        "fp32",
        "--output-dir",
        str(out),
        "--overwrite",
    ]


def measure(command: list[str]) -> tuple[int, float]:
    """(input tokens, tokens/s) from the summary line of one run."""
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    match = RATE.search(done.stdout)
    if match is None:
        raise SystemExit(f"no summary line in the output of {' '.join(command)}")
    return int(match.group(1).replace(",", "")), float(match.group(2).replace(",", ""))


def main() -> None:
    """Run 1 process, then N under torchrun, and print tokens/s and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="processes for the torchrun measurement (default: 2)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per measurement (default: 40)")
    parser.add_argument("--fsdp", action="store_true", help="measure --fsdp instead of DDP (default: DDP)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args()
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp:
        single = [sys.executable, str(REPO / "train.py"), *train_args(Path(tmp) / "one", args.steps, n, args.device)]
        tokens_1, rate_1 = measure(single)
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(n),
            str(REPO / "train.py"),
            *train_args(Path(tmp) / "many", args.steps, 1, args.device),
            *(["--fsdp"] if args.fsdp else []),
        ]
        tokens_n, rate_n = measure(launch)
    mode = "FSDP2" if args.fsdp else "DDP"
    print(f"tiny, {args.steps} steps, global batch {4 * n} rows x 256 tokens, fp32, {args.device}")
    print(f"1 process           : {rate_1:8,.0f} tok/s  ({tokens_1:,} tokens)")
    print(f"{n} processes ({mode}) : {rate_n:8,.0f} tok/s  ({tokens_n:,} tokens)  x{rate_n / rate_1:.2f}")


if __name__ == "__main__":
    main()
