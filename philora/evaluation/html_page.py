"""One self-contained HTML page of an evaluation: metrics, the run's plots (embedded) and every sample.

No external resource of any kind: the CSS and the small script are inline and the PNG is a data: URI,
so the file can be mailed or attached as it is. The script adds a text filter and a "did not stop" filter
and, once it has run, marks ``<body data-ready="N">`` with the number of sample rows it found.
"""

from __future__ import annotations

import base64
from html import escape

from philora.evaluation.runner import METRIC_ROWS

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; max-height: 16em; overflow: auto; font-size: 0.9em; }
.ran-on { background: #fff4e5; }
.meta { color: #666; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #ddd; }
"""

SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.sample"));
  var text = document.getElementById("filter"), ranOn = document.getElementById("ran-on"),
      shown = document.getElementById("shown");
  function update() {
    var needle = text.value.toLowerCase(), count = 0;
    rows.forEach(function (row) {
      var visible = (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0) &&
                    (!ranOn.checked || row.querySelector(".ran-on") !== null);
      row.style.display = visible ? "" : "none";
      count += visible ? 1 : 0;
    });
    shown.textContent = count + " of " + rows.length + " samples shown";
  }
  text.addEventListener("input", update);
  ranOn.addEventListener("change", update);
  update();
  document.body.setAttribute("data-ready", String(rows.length));
})();
"""


def _metrics_table(variants: dict[str, dict]) -> str:
    names = list(variants)
    head = "<tr><th>metric</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    body = []
    for label, key, form in METRIC_ROWS:
        cells = "".join(
            f'<td class="num">{escape(form.format(v[key])) if v.get(key) is not None else "n/a"}</td>'
            for v in variants.values()
        )
        body.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return f'<table id="metrics">{head}{"".join(body)}</table>'


def _reply_cell(sample: dict, name: str) -> str:
    if f"{name}_reply" not in sample:
        return "<td></td>"
    stopped = sample.get(f"{name}_stopped")
    scores = [f"{sample[f'{name}_tokens']} tokens", "stopped" if stopped else "ran to the token limit"]
    if f"{name}_rougeL" in sample:
        scores.append(f"ROUGE-L {sample[f'{name}_rougeL']:.3f}")
    css = "" if stopped else ' class="ran-on"'
    return (
        f'<td{css}><pre class="reply {escape(name)}">{escape(sample[f"{name}_reply"])}</pre>'
        f'<div class="meta">{escape(", ".join(scores))}</div></td>'
    )


def render_page(results, *, plot_png: bytes | None = None, plot_note: str | None = None) -> str:
    """The HTML text of the page for ``results`` (a philora.evaluation.runner.EvalResults)."""
    info = results.info
    names = list(results.variants)
    title = f"philora eval: {info['target']} ({info['split']})"
    facts = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in info.items())
    plot = ""
    if plot_png is not None:
        data = base64.b64encode(plot_png).decode("ascii")
        plot = f'<h2>Training curves</h2><img id="plots" alt="training curves" src="data:image/png;base64,{data}">'
    elif plot_note:
        plot = f'<p class="meta">{escape(plot_note)}</p>'
    head = (
        "<tr><th>#</th><th>prompt</th><th>reference</th>"
        + "".join(f"<th>{escape(n)} reply</th>" for n in names)
        + "</tr>"
    )
    rows = []
    for sample in results.samples:
        rows.append(
            f'<tr class="sample" data-index="{sample["index"]}"><td class="num">{sample["index"]}</td>'
            f'<td><pre class="prompt">{escape(sample["prompt"])}</pre></td>'
            f'<td><pre class="reference">{escape(sample["reference"])}</pre></td>'
            + "".join(_reply_cell(sample, n) for n in names)
            + "</tr>"
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>"
        f'<h1>{escape(title)}</h1><table id="info">{facts}</table>'
        f"<h2>Metrics</h2>{_metrics_table(results.variants)}{plot}"
        f'<h2>Samples</h2><p><input id="filter" type="search" placeholder="filter samples"> '
        f'<label><input id="ran-on" type="checkbox"> only replies that ran to the token limit</label> '
        f'<span id="shown"></span></p>'
        f'<table id="samples">{head}{"".join(rows)}</table>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
