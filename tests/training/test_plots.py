"""The run plots: a PNG that decodes, one line per metric in its own panel, and a clear line without matplotlib."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import philora.training.plots as plots
from philora.training.plots import PANELS, PLOT_FILE, PLOT_HINT, plot_metrics, plot_summary_line, read_metrics

pytest.importorskip("matplotlib", reason="matplotlib is in the plot/test extras")
Image = pytest.importorskip("PIL.Image", reason="Pillow comes with matplotlib")


def _records() -> list[dict]:
    records = []
    for step in range(1, 41):
        records.append(
            {
                "kind": "train",
                "step": step,
                "loss": 8.0 - 4.0 * math.log1p(step) / math.log(41),
                "lr": 1e-3 * min(1.0, step / 5) * (0.5 + 0.5 * math.cos(math.pi * step / 40)),
                "tokens_per_s": 900 + 80 * math.sin(step),
            }
        )
    for step in (0, 10, 20, 30, 40):
        records.append({"kind": "eval", "step": step, "loss": 7.8 - 0.08 * step, "gen_stop_share": step / 40})
    return records


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def test_png_decodes_with_one_line_per_metric_in_its_own_panel(tmp_path):
    out = tmp_path / "plots.png"
    drawn = plot_metrics(_records(), out, title="test run")
    assert drawn == {"train loss": 40, "eval loss": 5, "learning rate": 40, "tokens/s": 40}
    image = Image.open(out)
    image.load()  # decodes the whole PNG
    assert image.format == "PNG" and image.size == (1000, 700)
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    height, width, _ = rgb.shape
    # panel i sits in cell (row i // 2, column i % 2); count each panel colour's exact pixels per cell
    counts = {}
    for name, _, _, colour in PANELS:
        hits = np.all(rgb == np.array(_rgb(colour), dtype=rgb.dtype), axis=-1)  # (H, W)
        top, bottom = hits[: height // 2], hits[height // 2 :]
        counts[name] = [
            int(top[:, : width // 2].sum()),
            int(top[:, width // 2 :].sum()),
            int(bottom[:, : width // 2].sum()),
            int(bottom[:, width // 2 :].sum()),
        ]
    for index, (name, *_) in enumerate(PANELS):
        assert counts[name][index] > 200, (name, counts[name])  # a drawn line, not a stray pixel
        assert sum(counts[name]) == counts[name][index], (name, counts[name])  # and only in its own panel


def test_plot_run_and_summary_line(tmp_path, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _records()) + '{"kind": "tr', encoding="utf-8"
    )
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 45  # the cut-off last line is skipped
    assert plot_summary_line(tmp_path) == f"plots: {tmp_path / PLOT_FILE}"
    assert Image.open(tmp_path / PLOT_FILE).size == (1000, 700)
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    assert plot_summary_line(tmp_path) == f"plots: none ({PLOT_HINT})"
    assert "pip install 'philora[plot]'" in PLOT_HINT
