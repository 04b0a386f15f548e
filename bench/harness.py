"""What every bench script shares: random checkpoints in the official format, one subprocess per side,
alternating rounds, medians, peak memory from /proc, the machine line and markdown tables.

A bench script runs itself as a worker (``--worker NAME``) in a fresh process per side and round, so
each side's peak memory is its own; the worker prints one ``RESULT {json}`` line that the parent reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# The two widths the performance issue asks for, a few layers each (the real vocab sizes), and a tiny one.
SHAPES = {
    "phi-2": dict(family="phi", hidden=2560, intermediate=10240, heads=32, kv_heads=32, vocab=51200),
    "phi-3-mini": dict(family="phi3", hidden=3072, intermediate=8192, heads=32, kv_heads=32, vocab=32064),
    # phi-2's layout (head 80, 32 rotary dims) at a size for quick sanity runs; the tiny tokenizer's ids fit.
    "phi-2-tiny": dict(family="phi", hidden=320, intermediate=1280, heads=4, kv_heads=4, vocab=2048),
}
# LoRA targets that cover the same weights on both sides (attention + MLP).
TARGETS = {
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}


def write_checkpoint(directory: Path, shape: str, layers: int, dtype: str = "bfloat16", seed: int = 0) -> dict:
    """A random checkpoint of ``shape`` (SHAPES) with ``layers`` layers, saved by transformers' save_pretrained."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM, PhiConfig, PhiForCausalLM

    spec = SHAPES[shape]
    torch.manual_seed(seed)
    common = dict(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    if spec["family"] == "phi":  # phi-2: head 80, 32 rotary dims, parallel block, gelu_new
        config = PhiConfig(**common, partial_rotary_factor=0.4, hidden_act="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0)
        model = PhiForCausalLM(config)
    else:
        config = Phi3Config(**common, pad_token_id=32000, eos_token_id=32000, bos_token_id=1)
        model = Phi3ForCausalLM(config)
    model.to(getattr(torch, dtype)).save_pretrained(directory, safe_serialization=True)
    return spec


@contextlib.contextmanager
def checkpoint(shape: str, layers: int, dtype: str = "bfloat16", keep: Path | None = None) -> Iterator[Path]:
    """A directory holding ``write_checkpoint(shape, layers, dtype)``: a temporary one removed afterwards, or,
    with ``keep`` (else the ``BENCH_CHECKPOINTS`` variable), a folder under it that later runs reuse."""
    keep = keep or (Path(os.environ["BENCH_CHECKPOINTS"]) if os.environ.get("BENCH_CHECKPOINTS") else None)
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="philora-bench-") as tmp:
            write_checkpoint(Path(tmp), shape, layers, dtype)
            yield Path(tmp)
        return
    directory = Path(keep) / f"{shape}-{layers}layers-{dtype}"
    if not (directory / "config.json").is_file():
        # Written beside its final name and renamed, so an interrupted write is never reused.
        directory.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=directory.name + ".partial-", dir=directory.parent))
        write_checkpoint(partial, shape, layers, dtype)
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    yield directory


def directory_mib(directory: Path) -> float:
    """Size on disk of the files in ``directory`` (not recursive), in MiB."""
    return sum(f.stat().st_size for f in Path(directory).iterdir() if f.is_file()) / 2**20


def worker_argv(script: str, worker: str, **options) -> list[str]:
    """The command line that runs ``script`` as ``worker`` with ``--key value`` options (None and False left
    out, True as a bare ``--key`` flag)."""
    argv = [sys.executable, script, "--worker", worker]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def run_worker(argv: Sequence[str], timeout: float = 3600) -> dict:
    """Run one worker process; return the JSON of its last ``RESULT`` line (exit with its output if none)."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(
            f"worker failed (exit {done.returncode}): {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def alternate(sides: dict[str, Sequence[str]], rounds: int) -> dict[str, list[dict]]:
    """Run every side once per round, in turn (A B A B ...), so drift on the machine hits both alike."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for round_index in range(rounds):
        order = list(sides) if round_index % 2 == 0 else list(sides)[::-1]
        for name in order:
            results[name].append(run_worker(sides[name]))
    return results


def median(results: list[dict], key: str) -> float:
    """The median of ``key`` over the rounds of one side."""
    return statistics.median(r[key] for r in results)


def emit(result: dict) -> None:
    """A worker's answer to its parent (one line, flushed)."""
    print("RESULT " + json.dumps(result), flush=True)


def proc_status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, ...); VmHWM is this process's own peak resident set."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Start VmHWM again from the current resident set (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


@contextlib.contextmanager
def sampled_peak(field: str = "RssAnon", interval: float = 0.002) -> Iterator[dict]:
    """Sample a /proc/self/status field (KiB) from a thread while the block runs; yields a dict whose
    ``start`` and ``peak`` (MiB) are filled in. RssAnon leaves out memory-mapped file pages, which VmHWM
    counts though the kernel can drop them; a sample can miss a peak shorter than ``interval``."""
    result = {"start": proc_status_kib(field) / 1024}
    result["peak"] = result["start"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result["peak"] = max(result["peak"], proc_status_kib(field) / 1024)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["peak"] = max(result["peak"], proc_status_kib(field) / 1024)


def peak_memory_mib(device: str = "cpu") -> float:
    """Peak memory of this process: VmHWM on CPU, max allocated on CUDA."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_kib("VmHWM") / 1024


def matmul_peak_flops(dtype, device: str = "cpu", size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square matmul in ``dtype`` measured here (the best of ``repeats``, after two warm-ups):
    the denominator of model FLOP utilization."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for _ in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times[2:])


def memory_bandwidth(device: str = "cpu", mib: int = 1024, repeats: int = 5) -> float:
    """Bytes/s of reading a large buffer once (a sum over it): the bound on decoding speed."""
    import torch

    buffer = torch.ones(mib * 2**20 // 4, device=device)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        buffer.sum()
        sync(device)
        times.append(time.perf_counter() - start)
    return buffer.numel() * 4 / statistics.median(times[1:])


def matvec_bandwidth(rows: int, cols: int, dtype, device: str = "cpu", repeats: int = 10) -> float:
    """Bytes/s at which a (1, cols) @ (rows, cols)^T product in ``dtype`` reads its weight (median): what a
    decoding step's matmuls can reach here, below the plain read of ``memory_bandwidth``."""
    import torch
    import torch.nn.functional as F

    weight = torch.randn(rows, cols, device=device).to(dtype)
    row = torch.randn(1, cols, device=device).to(dtype)
    times = []
    for _ in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        F.linear(row, weight)
        sync(device)
        times.append(time.perf_counter() - start)
    return weight.numel() * weight.element_size() / statistics.median(times[2:])


def sync(device: str) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(step: Callable[[], object], warmup: int, steps: int, device: str = "cpu") -> list[float]:
    """Seconds of each of ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def machine_line() -> str:
    """The machine and the library versions, for the table's heading."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = [f"torch {torch.__version__}"]
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, {torch.get_num_threads()} torch threads; {', '.join(versions)}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; the first column left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
