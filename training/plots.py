"""A PNG of a run's curves from its metrics.jsonl: train loss, eval loss, learning rate and tokens/s by step.

matplotlib is optional (the ``plot`` extra); without it :func:`plot_summary_line` says how to get it.
Each metric has a panel of its own and a colour of its own (:data:`PANELS`), drawn without
antialiasing so the colour of every line appears in the PNG exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from philora.training.progress import METRICS_FILE

PLOT_FILE = "plots.png"
PLOT_HINT = "pip install 'philora[plot]' (matplotlib) for a PNG of loss, learning rate and tokens/s"

# (title, record kind, key, colour): one panel per metric, laid out row by row on a 2 x 2 grid.
PANELS = (
    ("train loss", "train", "loss", "#1f77b4"),
    ("eval loss", "eval", "loss", "#d62728"),
    ("learning rate", "train", "lr", "#2ca02c"),
    ("tokens/s", "train", "tokens_per_s", "#9467bd"),
)


def matplotlib_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a kill is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in the records of ``kind``, in step order, numbers only."""
    points = sorted(
        (r["step"], r[key])
        for r in records
        if r.get("kind") == kind and isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)
    )
    return [s for s, _ in points], [v for _, v in points]


def plot_metrics(records: list[dict], out_png: str | Path, *, title: str = "") -> dict[str, int]:
    """Draw the four panels of ``records`` into ``out_png`` (atomically); returns points per panel title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lora_core import atomic_write

    figure = Figure(figsize=(10, 7), dpi=100)
    FigureCanvasAgg(figure)
    drawn = {}
    for index, (name, kind, key, colour) in enumerate(PANELS):
        axes = figure.add_subplot(2, 2, index + 1)
        steps, values = series(records, kind, key)
        drawn[name] = len(steps)
        if steps:
            axes.plot(
                steps,
                values,
                color=colour,
                linewidth=2,
                marker="o" if len(steps) < 30 else None,
                markersize=4,
                antialiased=False,
            )
        else:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="0.5")
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(True, color="0.9")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    atomic_write(out_png, lambda tmp: figure.savefig(tmp, format="png"))
    return drawn


def plot_run(run_dir: str | Path) -> Path | None:
    """Write ``<run_dir>/plots.png`` from its metrics.jsonl; None without matplotlib or metrics."""
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not matplotlib_available() or not metrics.is_file():
        return None
    out = run_dir / PLOT_FILE
    plot_metrics(read_metrics(metrics), out, title=run_dir.name)
    return out


def plot_summary_line(run_dir: str | Path) -> str:
    """Write the run's plots and return the line that points at them (or says how to get them)."""
    path = plot_run(run_dir)
    if path is not None:
        return f"plots: {path}"
    if not matplotlib_available():
        return f"plots: none ({PLOT_HINT})"
    return f"plots: none ({Path(run_dir) / METRICS_FILE} is missing)"
