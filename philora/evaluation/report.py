"""``philora eval``'s outputs: a readable table, the results as JSON, the samples as JSONL and as an HTML page."""

from __future__ import annotations

import json
from pathlib import Path

from lora_core import atomic_write
from philora.evaluation.html_page import render_page
from philora.evaluation.runner import METRIC_ROWS, EvalResults
from philora.training.gen_metrics import ROUGE_HINT, ROUGE_TYPES
from philora.training.plots import PLOT_FILE, plot_run


def format_table(results: EvalResults) -> str:
    """The metrics of every variant side by side, with a heading line saying what was evaluated."""
    info = results.info
    adapter = f" + adapter {info['adapter']}" if info["adapter"] else ""
    lines = [
        f"{info['target']}{adapter} on {info['data']} ({info['split']}): {info['examples']} examples, "
        f"{info['generated']} generated (greedy, at most {info['max_new_tokens']} new tokens), "
        f"{info['precision']}"
    ]
    names = list(results.variants)
    lines.append(f"{'metric':<22}" + "".join(f"{name:>12}" for name in names))
    for label, key, form in METRIC_ROWS:
        cells = []
        for name in names:
            value = results.variants[name].get(key)
            cells.append(f"{form.format(value) if value is not None else 'n/a':>12}")
        lines.append(f"{label:<22}" + "".join(cells))
    if any(key not in results.variants[names[0]] for key in ROUGE_TYPES):
        lines.append(f"(ROUGE n/a: {ROUGE_HINT})")
    return "\n".join(lines)


def output_paths(out_dir: str | Path, split: str) -> dict[str, Path]:
    """Where the results of ``split`` go: ``<out>/<split>.json``, ``<split>-samples.jsonl``, ``<split>.html``."""
    out = Path(out_dir)
    return {"json": out / f"{split}.json", "jsonl": out / f"{split}-samples.jsonl", "html": out / f"{split}.html"}


def write_results(results: EvalResults, out_dir: str | Path, *, run_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the JSON, JSONL and HTML files (atomically); a run's plots go into the page. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out, results.info["split"])
    document = {"info": results.info, "results": results.variants}
    atomic_write(paths["json"], lambda p: Path(p).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8"))
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in results.samples)
    atomic_write(paths["jsonl"], lambda p: Path(p).write_text(lines, encoding="utf-8"))
    plot = plot_run(run_dir) if run_dir is not None else None
    plot_png = plot.read_bytes() if plot is not None else None
    page = render_page(
        results,
        plot_png=plot_png,
        plot_note=None if plot_png or run_dir is None else f"no {PLOT_FILE}: pip install 'philora[plot]'",
    )
    atomic_write(paths["html"], lambda p: Path(p).write_text(page, encoding="utf-8"))
    return paths
