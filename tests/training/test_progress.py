"""Metrics log: one JSON line per record; a resumed run drops the records after its checkpoint."""

import json

import pytest

from philora.training.progress import MetricsLog, ProgressBar, format_duration


def test_metrics_truncated_on_resume(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "st')  # a line cut short by SIGKILL
    log = MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    log.write({"kind": "train", "step": 4, "loss": 0.5})
    log.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_progress_line_and_duration(capsys):
    import sys

    bar = ProgressBar(10, stream=sys.stdout)
    bar.update(5, loss=1.25, lr=2e-4, tokens_per_s=1234.0, force_line=True)
    line = capsys.readouterr().out
    assert (
        "step 5/10" in line
        and "loss 1.2500" in line
        and "lr 2.00e-04" in line
        and "1,234 tok/s" in line
        and "ETA" in line
    )
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"


def test_tensorboard_events_mirror_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra; optional for users
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path)
    for step, loss in [(1, 2.5), (2, 2.0)]:
        log.write({"kind": "train", "step": step, "loss": loss, "lr": 1e-3})
    log.write({"kind": "eval", "step": 2, "loss": 1.75, "ppl": 5.75})
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (2, 2.0)]
    assert [(e.step, e.value) for e in events.Scalars("eval/ppl")] == [(2, 5.75)]
