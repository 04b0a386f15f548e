"""``philora eval`` and ``report`` on a short tiny run; ``--eval-generate`` in training; the HTML in Chromium."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from philora.cli import main
from tests.philora.eval_run import chromium_path, trained_run_dir

pytest.importorskip("rouge_score", reason="rouge-score is in the eval/test extras")


@pytest.fixture(scope="module")
def run_dir():
    return trained_run_dir()


def _evals(run_dir) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def evaluated(run_dir):
    """``philora eval RUN --compare-base`` with the generation settings of the run's --eval-generate."""
    assert main(["eval", str(run_dir), "--compare-base", "--max-new-tokens", "8"]) == 0
    results = json.loads((run_dir / "eval" / "val.json").read_text())
    samples = [json.loads(line) for line in (run_dir / "eval" / "val-samples.jsonl").read_text().splitlines()]
    return results, samples


def test_training_logs_generation_metrics_at_every_eval_and_to_tensorboard(run_dir):
    evals = _evals(run_dir)
    assert [e["step"] for e in evals] == [0, 4, 8]
    for record in evals:
        assert record["gen_examples"] == 2  # --val-fraction 0.01 of the sample holds out 2 conversations
        for key in ("gen_rouge1", "gen_rouge2", "gen_rougeL", "gen_exact_match", "gen_reply_tokens"):
            assert 0.0 <= record[key] <= (8 if key == "gen_reply_tokens" else 1.0)
        assert record["gen_stop_share"] in (0.0, 0.5, 1.0)
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    logged = accumulator.Scalars("eval/gen_stop_share")
    assert [(e.step, e.value) for e in logged] == [(r["step"], r["gen_stop_share"]) for r in evals]
    assert "eval/gen_rougeL" in accumulator.Tags()["scalars"]
    assert (run_dir / "plots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # written at the end of the run


def test_perplexity_equals_exp_of_the_training_eval_loss(run_dir):
    assert main(["eval", str(run_dir), "--max-new-tokens", "4", "--output-dir", str(run_dir / "full")]) == 0
    adapter = json.loads((run_dir / "full" / "val.json").read_text())["results"]["adapter"]
    final = _evals(run_dir)[-1]
    assert adapter["ppl"] == pytest.approx(math.exp(final["loss"]), rel=1e-6)
    assert adapter["target_tokens"] == final["tokens"]


def test_compare_base_side_by_side(evaluated, run_dir, capsys):
    results, samples = evaluated
    adapter, base = results["results"]["adapter"], results["results"]["base"]
    first, final = _evals(run_dir)[0], _evals(run_dir)[-1]
    # LoRA starts with B = 0, so the base equals the model at step 0
    assert base["ppl"] == pytest.approx(math.exp(first["loss"]), rel=1e-6)
    assert adapter["loss"] == pytest.approx(final["loss"], rel=1e-6)
    # the same prompts, greedy, 8 tokens, as training's --eval-generate at its last evaluation
    for key in ("rouge1", "rouge2", "rougeL", "exact_match", "reply_tokens", "stop_share"):
        assert adapter[key] == pytest.approx(final[f"gen_{key}"], abs=1e-12)
    assert len(samples) == results["info"]["generated"] == 2
    for variant, metrics in (("adapter", adapter), ("base", base)):
        assert metrics["stop_share"] == sum(s[f"{variant}_stopped"] for s in samples) / len(samples)
        assert metrics["rougeL"] == pytest.approx(sum(s[f"{variant}_rougeL"] for s in samples) / len(samples))
    assert {"prompt", "reference", "adapter_reply", "base_reply"} <= set(samples[0])
    assert samples[0]["prompt"].endswith("<|assistant|>\n") and samples[0]["reference"]


def test_html_page_holds_every_sample_in_a_real_browser(evaluated, run_dir, tmp_path):
    browser = chromium_path()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    _, samples = evaluated
    page = run_dir / "eval" / "val.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # self-contained: nothing fetched
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f'data-ready="{len(samples)}"' in dom  # the page's script ran and counted every row
    assert f"{len(samples)} of {len(samples)} samples shown" in dom
    rows = re.findall(r'<tr class="sample" data-index="(\d+)"', dom)
    assert rows == [str(s["index"]) for s in samples]
    from html import escape

    for sample in samples:
        for key in ("reference", "adapter_reply", "base_reply"):
            assert escape(sample[key], quote=False) in dom
    assert 'id="plots"' in dom and "data:image/png;base64," in dom


def test_report_writes_the_plot_and_summarizes(run_dir, capsys):
    (run_dir / "plots.png").unlink()
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"plots: {run_dir / 'plots.png'}" in out and (run_dir / "plots.png").is_file()
    assert "eval: loss" in out and "stop_share" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "{empty}"], "neither a run directory"),
        (["eval", "tiny", "--data", "samples/roleplay", "--compare-base"], "--compare-base needs an adapter"),
        (["eval", "{run}", "--split", "test"], "--split test evaluates every example of --data"),
        (["eval", "{run}", "--limit", "0"], "--limit must be >= 1"),
        (["eval", "tiny"], "say what to evaluate on with --data"),
        (["report", "{empty}"], "no metrics.jsonl"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(argv, message, run_dir, tmp_path, capsys):
    argv = [a.format(empty=tmp_path, run=run_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
