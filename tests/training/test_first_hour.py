"""What a new user hits in the first hour: one-line argument errors, resume that extends the schedule,
a run killed before its first save, small data, --targets typos, the sample prompt and reply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import phi_models
from philora import data
from philora.training.checkpoint import list_checkpoints
from philora.training.config import read_config_file
from philora.training.guidance import did_you_mean, empty_reply_note, session_summary, small_data_note
from philora.training.run import main, sample_prompt_for
from philora.training.schedule import LRSchedule

REPO = Path(__file__).resolve().parents[2]
BASE = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "16",
    "--max-seq-len",
    "64",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--sample-tokens",
    "0",
    "--precision",
    "fp32",
    "--eval-every",
    "0",
    "--log-every",
    "1",
]


def _lrs(out: Path) -> dict[int, float]:
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}


def test_unknown_flag_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--model", "tiny", "--lr-rate", "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "unknown option(s) --lr-rate (did you mean --lr?)" in err and "usage:" not in err
    with pytest.raises(SystemExit) as stop:
        main(["--model", "tiny", "--data", "x", "--schedule", "cosin"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "argument --schedule: 'cosin' is not one of cosine, linear, constant (did you mean cosine?)" in err


def test_any_parser_error_is_one_line_listing_the_choices(capsys):
    from philora.training.guidance import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="philora x")
    parser.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "sampel"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose from" in err and "greedy" in err and "(did you mean sample?)" in err


def test_unknown_config_key_gets_a_suggestion(tmp_path):
    from philora.training.errors import TrainingError

    path = tmp_path / "run.yaml"
    path.write_text("lora_rank: 8\n")
    with pytest.raises(TrainingError, match=r"unknown key\(s\) lora_rank \(did you mean 'lora_r'\?\)"):
        read_config_file(str(path))
    assert did_you_mean("zzzz", ["lr", "seed"]) == ""


def test_python_m_training_run_behaves_like_train_py():
    for argv in (["--lr-rate", "1"], ["--help"]):
        ours = subprocess.run(
            [sys.executable, "-m", "philora.training.run", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            timeout=120,
        )
        script = subprocess.run(
            [sys.executable, "train.py", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            timeout=120,
        )
        assert ours.returncode == script.returncode and ours.stdout == script.stdout
        assert ours.stderr == script.stderr


def test_extended_schedule_follows_the_stretched_curve():
    param = torch.nn.Parameter(torch.zeros(1))
    old = LRSchedule(torch.optim.SGD([param], lr=1.0), kind="cosine", peak_lr=1.0, total_steps=10, warmup_steps=2)
    for _ in range(10):
        old.step()
    assert old.get_last_lr() == 0.0  # the old schedule is spent
    note = old.extend_to(20)
    fresh = LRSchedule(torch.optim.SGD([param], lr=1.0), kind="cosine", peak_lr=1.0, total_steps=20, warmup_steps=2)
    assert [old.lr_at(s) for s in range(10, 20)] == [fresh.lr_at(s) for s in range(10, 20)]
    assert old.get_last_lr() > 0.4 and "extended from 10 to 20 steps" in note
    assert old.extend_to(15) is None and old.total_steps == 20


def test_resume_with_more_steps_never_trains_at_lr_zero(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*BASE, "--output-dir", str(out), "--max-steps", "4", "--save-every", "4", "--warmup", "1"]) == 0
    assert (
        main(
            [
                *BASE,
                "--output-dir",
                str(out),
                "--max-steps",
                "8",
                "--save-every",
                "4",
                "--warmup",
                "1",
                "--resume",
                "latest",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    lrs = _lrs(out)
    assert sorted(lrs) == list(range(1, 9)) and all(lrs[s] > 0 for s in range(5, 9))
    assert "schedule extended from 4 to 8 steps" in printed
    assert "done: run total 8 steps" in printed and "this session 4 steps (from step 4)" in printed


def test_run_killed_before_its_first_save_is_recovered_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_config.yaml").write_text("model: tiny\n")  # what a SIGKILL before the first save leaves
    (out / "metrics.jsonl").write_text("")
    assert main([*BASE, "--output-dir", str(out)]) == 2
    first = capsys.readouterr().err
    assert main([*BASE, "--output-dir", str(out), "--resume", "latest"]) == 2
    second = capsys.readouterr().err
    assert "no complete checkpoint" in first and "--overwrite" in first and "--resume" not in first
    assert "nothing to resume" in second and "--overwrite instead of --resume" in second
    # the one flag both name works, and the tiny data gives the small-data note
    assert main([*BASE, "--output-dir", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "note: only" in printed and "pass --epochs" in printed and list_checkpoints(out)


def test_small_data_note():
    note = small_data_note(1, 2, 7, 4, 2, 1.0, None, 1)
    assert note.startswith("note: only 1 optimizer step (7 training examples -> 2 batches of 4 per epoch, accum 2")
    assert "pass --epochs 10 (or --max-steps) to train about 10 steps" in note
    assert small_data_note(1, 2, 7, 4, 2, 1.0, 5, 1) is None and small_data_note(12, 12, 48, 4, 1, 1.0, None, 0) is None


def test_targets_typo_is_reported_before_tokenizing(tmp_path, capsys, monkeypatch):
    def no_tokenizing(*args, **kwargs):
        raise AssertionError("data.prepare must not run before --targets is checked")

    monkeypatch.setattr(data, "prepare", no_tokenizing)
    assert main([*BASE, "--output-dir", str(tmp_path / "r"), "--targets", "q_proj,fc3"]) == 2
    err = capsys.readouterr().err
    assert "--targets: fc3 matches no layer of this model (did you mean fc" in err
    listed = err.split("targetable names: ")[1].strip().split(", ")
    assert "qkv_proj" in listed and "q_proj" in listed and "fc1" in listed and len(listed) == len(set(listed)) < 15


def test_sample_prompt_goes_through_the_template():
    tok = phi_models.load_tokenizer("tiny")
    prepared = data.prepare("samples/roleplay", tok, template="phi3", max_seq_len=64, limit=4)
    cfg = SimpleNamespace(sample_prompt="Hello there")
    assert sample_prompt_for(cfg, tok, prepared) == tok.encode("<|user|>\nHello there<|end|>\n<|assistant|>\n")


def test_empty_reply_and_session_summary_say_what_they_mean():
    tok = phi_models.load_tokenizer("tiny")
    assert "stop token" in empty_reply_note([], "", tok) and "stopped at once" in empty_reply_note([], "", tok)
    assert "only whitespace" in empty_reply_note(tok.encode(" \n"), " \n", tok)
    assert empty_reply_note(tok.encode("hi"), "hi", tok) is None
    state = SimpleNamespace(step=10, elapsed=30.0, tokens_seen=500)
    fresh = session_summary(state, 0, 30.0, 900, 30.0, 100.0)
    assert fresh.startswith("done: 10 steps") and "run total" not in fresh
    resumed = session_summary(state, 6, 12.0, 400, 33.0, 100.0)
    assert "run total 10 steps" in resumed and "500 target tokens" in resumed
    assert "this session 4 steps (from step 6), 12.0 s, 400 tokens" in resumed
