"""data.prepare end to end: splits, counts in the report, skipping and truncation."""

from __future__ import annotations

import pytest

from philora.data import prepare
from philora.data.errors import DataError
from philora.data.tokenize import IGNORE_INDEX
from tests.data.conftest import write_jsonl


def test_report_counts_skips_and_truncation(tmp_path, tiny_tok):
    records = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(8)
    ]
    records.append({"messages": [{"role": "user", "content": "nobody answers"}]})
    records.append({"messages": [{"role": "user", "content": "long " * 300}, {"role": "assistant", "content": "ok"}]})
    records.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 300}]})
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    prepared = prepare(str(path), tiny_tok, max_seq_len=64, val_fraction=0.0)
    report = prepared.report
    assert report.records == 11 and report.kept == report.kept_train == 9 and report.kept_val == 0
    assert dict(report.skipped) == {"no assistant turn": 1, "no target left after truncation": 1}
    assert report.truncated == 2
    assert report.tokens == sum(len(e) for e in prepared.train)
    assert report.target_tokens == sum(e.num_targets for e in prepared.train)
    assert all(len(e) <= 64 for e in prepared.train)
    assert report.length_percentiles()["max"] == 64
    table = str(report)
    for word in ("examples", "kept", "skipped", "truncated", "tokens", "p50", "p90", "p99"):
        assert word in table
    assert "2 (1 no assistant turn, 1 no target left after truncation)" in table


def test_held_out_fraction_is_seeded_and_disjoint(tiny_tok):
    a = prepare("samples/roleplay", tiny_tok, max_seq_len=256, val_fraction=0.1, seed=7)
    b = prepare("samples/roleplay", tiny_tok, max_seq_len=256, val_fraction=0.1, seed=7)
    c = prepare("samples/roleplay", tiny_tok, max_seq_len=256, val_fraction=0.1, seed=8)
    key = lambda examples: [tuple(e.input_ids) for e in examples]  # noqa: E731
    assert key(a.val) == key(b.val) and key(a.train) == key(b.train)
    assert key(a.val) != key(c.val)
    assert len(a.val) == round(242 * 0.1) and len(a.train) + len(a.val) == 242
    assert not set(key(a.val)) & set(key(a.train))


def test_own_validation_split_is_used_and_limit_caps(tiny_tok):
    prepared = prepare("samples/tweetsumm", tiny_tok, max_seq_len=512, val_fraction=0.5)
    assert (len(prepared.train), len(prepared.val)) == (48, 8)
    assert prepared.template == "instruction"
    limited = prepare("samples/tweetsumm", tiny_tok, max_seq_len=512, limit=5)
    assert (len(limited.train), len(limited.val)) == (5, 5)


def test_every_example_ends_by_learning_eos(tiny_tok):
    for source in ("samples/roleplay", "samples/oasst1", "samples/alpaca", "samples/sharegpt", "samples/text"):
        prepared = prepare(source, tiny_tok, max_seq_len=1024)
        for example in prepared.train:
            learned = [t for t in example.targets if t != IGNORE_INDEX]
            assert learned[-1] == tiny_tok.eos_token_id, source


def test_template_override_and_bad_options(tiny_tok):
    assert prepare("samples/oasst1", tiny_tok, template="phi3").template == "phi3"
    with pytest.raises(DataError, match="template 'zephyr' is unknown"):
        prepare("samples/oasst1", tiny_tok, template="zephyr")
    with pytest.raises(DataError, match=r"val_fraction=1.5 must be in \[0, 1\)"):
        prepare("samples/roleplay", tiny_tok, val_fraction=1.5)
