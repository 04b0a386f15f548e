"""``philora report RUN``: the run's curves as a PNG (train loss, eval loss, lr, tokens/s) and a short summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``philora report``."""
    parser.add_argument("run_dir", metavar="RUN", help="a run directory (the --output-dir of a training run)")


def summary_lines(records: list[dict]) -> list[str]:
    """What the metrics say in a few lines: steps, losses, throughput, the last generation metrics."""
    from philora.training.plots import series

    lines = []
    steps, losses = series(records, "train", "loss")
    if steps:
        lines.append(f"train: {steps[-1]} steps, loss {losses[0]:.4f} (step {steps[0]}) -> {losses[-1]:.4f}")
    _, rates = series(records, "train", "tokens_per_s")
    if rates:
        lines.append(f"throughput: median {sorted(rates)[len(rates) // 2]:,.0f} tokens/s over {len(rates)} log lines")
    evals = [r for r in records if r.get("kind") == "eval"]
    if evals:
        best = min(evals, key=lambda r: r["loss"])
        lines.append(
            f"eval: loss {evals[0]['loss']:.4f} (step {evals[0]['step']}) -> {evals[-1]['loss']:.4f} "
            f"(step {evals[-1]['step']}), best {best['loss']:.4f} at step {best['step']}"
        )
        generated = {k[4:]: v for k, v in evals[-1].items() if k.startswith("gen_") and isinstance(v, (int, float))}
        if generated:
            lines.append(
                "last generation eval: "
                + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in generated.items())
            )
    return lines


def run(args: argparse.Namespace) -> int:
    """Write RUN/plots.png and print the summary; one line on stderr and exit 2 for a path that is not a run."""
    from philora.commands.common import fail
    from philora.training.plots import plot_summary_line, read_metrics
    from philora.training.progress import METRICS_FILE

    run_dir = Path(args.run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        return fail(f"{run_dir}: no {METRICS_FILE}; pass the --output-dir of a training run")
    records = read_metrics(metrics)
    print(f"run {run_dir}: {len(records)} metric records")
    for line in summary_lines(records):
        print(line)
    print(plot_summary_line(run_dir))
    return 0
