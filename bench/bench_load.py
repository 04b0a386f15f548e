"""Benchmark loading a checkpoint: phi_models.from_pretrained against transformers' from_pretrained, dense
bf16 and nf4, on one random checkpoint in the official format (harness.write_checkpoint). Not a test.

    python bench/bench_load.py [--shape phi-2] [--layers 5] [--rounds 3] [--modes dense,nf4] [--keep DIR]

Each load runs in a fresh process (harness.alternate: philora and transformers in turn, the order flipped
every round); the table holds the medians over the rounds:

- dense: ``phi_models.from_pretrained(dir, dtype=torch.bfloat16)`` against
  ``AutoModelForCausalLM.from_pretrained(dir, dtype=torch.bfloat16)``;
- nf4: ``phi_models.from_pretrained(dir, dtype=torch.bfloat16, quantize="nf4")`` against the same call
  with ``quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
  bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)``. Double quantization is
  philora's default, so it is asked of transformers too: the same work, the same bytes kept. transformers
  (5.x) with bitsandbytes 0.45+ quantizes on CPU; if a version refuses, its row says so instead of numbers.

Each worker imports its stack first (torch, its library, bitsandbytes for nf4 on both sides, and for
transformers the model's modeling module, which it otherwise imports lazily inside the load), then takes
the baseline. Columns:

- ``load s``: wall time of the from_pretrained call;
- ``peak``: VmHWM, reset when the load starts, minus the resident set before it (``peak abs``: VmHWM
  itself, imports included). Both stacks memory-map the safetensors file, so the mapped pages they touch
  count here too;
- ``heap peak``: the highest anonymous resident memory (RssAnon, no mapped file pages) over the baseline,
  sampled every 2 ms;
- ``after``: the resident set once the load returned, over the baseline;
- ``touched``: the same once every parameter and buffer has been read once (what the first forward pass
  will cost): a stack that leaves the weights memory-mapped and untouched shows it here, not in ``after``;
- ``model``: bytes of the loaded parameters, buffers and 4-bit quantization state.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (bench/ is not a package)

SIDES = ("philora", "transformers")
MODES = ("dense", "nf4")
COLUMNS = [
    ("load s", "seconds", "{:.2f}"),
    ("peak MiB", "peak", "{:.0f}"),
    ("peak abs MiB", "peak_abs", "{:.0f}"),
    ("heap peak MiB", "heap_peak", "{:.0f}"),
    ("after MiB", "after", "{:.0f}"),
    ("touched MiB", "touched", "{:.0f}"),
    ("model MiB", "model", "{:.0f}"),
]


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (and the hidden worker ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(harness.SHAPES), default="phi-2")
    parser.add_argument("--layers", type=int, default=5, help="5: about 1.3 GB in bf16")
    parser.add_argument("--rounds", type=int, default=3, help="loads per side and mode (median reported)")
    parser.add_argument("--modes", default="dense,nf4", help="comma-separated: dense, nf4")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint under this directory")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")
    return args


# ---------------------------------------------------------------------------- worker


def loader(side: str, mode: str, directory: str):
    """Import everything ``side`` needs for ``mode`` now and return the load call itself."""
    import torch

    if mode == "nf4":
        import bitsandbytes  # noqa: F401  (a fixed import cost on both sides, not part of loading)
    if side == "philora":
        import phi_models

        quantize = "nf4" if mode == "nf4" else None
        return lambda: phi_models.from_pretrained(directory, dtype=torch.bfloat16, quantize=quantize)

    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(directory))]  # imports the modeling module
    options = {}
    if mode == "nf4":
        import transformers.integrations.bitsandbytes  # noqa: F401

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    return lambda: AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16, **options)


def touch(model) -> None:
    """Read every parameter and buffer once, so memory-mapped weights become resident."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()


def model_mib(model) -> float:
    """Bytes of the parameters, buffers and 4-bit quantization state (absmax, nested absmax), in MiB."""
    total, seen = 0, set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            nested = getattr(state, "state2", None)
            for part in (state.absmax, nested.absmax if nested is not None else None):
                if part is not None:
                    total += part.numel() * part.element_size()
    return total / 2**20


def worker(args: argparse.Namespace) -> None:
    """One load in this fresh process; emits its measurements."""
    try:
        load = loader(args.worker, args.mode, args.dir)
    except ImportError as error:
        harness.emit({"refused": f"import failed: {error}"})
        return
    gc.collect()
    baseline = harness.proc_status_kib("VmRSS") / 1024
    harness.reset_peak_rss()
    with harness.sampled_peak("RssAnon") as heap:
        start = time.perf_counter()
        try:
            model = load()
        except Exception as error:  # a stack that refuses this mode (e.g. 4-bit on CPU) reports why
            harness.emit({"refused": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"})
            return
        seconds = time.perf_counter() - start
    peak_abs = harness.peak_memory_mib()
    after = harness.proc_status_kib("VmRSS") / 1024 - baseline
    touch(model)
    harness.emit(
        dict(
            seconds=seconds,
            peak=peak_abs - baseline,
            peak_abs=peak_abs,
            heap_peak=heap["peak"] - heap["start"],
            after=after,
            touched=harness.proc_status_kib("VmRSS") / 1024 - baseline,
            model=model_mib(model),
        )
    )


# ---------------------------------------------------------------------------- parent


def table_rows(mode: str, results: dict[str, list[dict]]) -> list[list[str]]:
    """The rows of one mode: each side's medians, then ours / theirs."""
    rows, medians = [], {}
    for side in SIDES:
        refused = next((r["refused"] for r in results[side] if "refused" in r), None)
        if refused:
            rows.append([f"{side} {mode}", f"refused: {refused}", *[""] * (len(COLUMNS) - 1)])
            continue
        medians[side] = {key: harness.median(results[side], key) for _, key, _ in COLUMNS}
        rows.append([f"{side} {mode}", *[fmt.format(medians[side][key]) for _, key, fmt in COLUMNS]])
    if len(medians) == 2:
        ours, theirs = medians["philora"], medians["transformers"]
        ratios = [f"{ours[key] / theirs[key]:.2f}x" if theirs[key] else "-" for _, key, _ in COLUMNS]
        rows.append([f"**{mode}: philora / transformers**", *ratios])
    return rows


def main(argv=None) -> None:
    """Write the checkpoint, run the loads alternately, print the table."""
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    started = time.perf_counter()
    with harness.checkpoint(args.shape, args.layers, "bfloat16", keep=args.keep) as directory:
        disk = harness.directory_mib(directory)
        print(f"checkpoint ready ({disk:.0f} MiB) after {time.perf_counter() - started:.0f}s", file=sys.stderr)
        rows = []
        for mode in args.modes:
            sides = {side: harness.worker_argv(__file__, side, mode=mode, dir=directory) for side in SIDES}
            rows += table_rows(mode, harness.alternate(sides, args.rounds))
    print(
        f"Loading a {args.shape}-width checkpoint with {args.layers} layers (random bf16 safetensors, "
        f"{disk:.0f} MiB on disk); median of {args.rounds} rounds, one process per load, sides alternating.\n"
        f"{harness.machine_line()}\n"
    )
    print(harness.markdown_table(["load", *[name for name, _, _ in COLUMNS]], rows))
    print(f"\n(total {time.perf_counter() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    main()
