"""Each source parses files written in its real on-disk schema into the expected conversations."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from philora.data.conversation import Message
from philora.data.errors import DataError
from philora.data.sources import load_source
from philora.data.sources.local_files import load_local
from philora.data.sources.oasst1 import load_oasst1
from philora.data.sources.roleplay import load_roleplay
from philora.data.sources.tweetsumm import SYSTEM_PROMPT, clean_text, load_tweetsumm
from tests.data.conftest import oasst_row, tweetsumm_dialog, write_jsonl, write_oasst_parquet


def test_roleplay_parquet_parses_turns_and_strips_zephyr_ends(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    texts = [
        "<|system|>You are Bob, a baker.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello, I bake bread.</s>\n"
        "<|user|>\nWhat do you bake?</s>\n<|assistant|>\nRye and sourdough.</s>\n",
        "<|user|>Who are you?<|assistant|>A knight.",  # no system block, no </s>
    ]
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"name": "Bob", "description": "Bob is a baker.", "text": texts[0]},
                {"name": "Sir K", "description": "Sir K is a knight.", "text": texts[1]},
            ]
        ),
        path,
    )
    data = load_roleplay([path])
    assert data.kind == "roleplay" and data.records == 2
    assert data.train[0].messages == (
        Message("system", "You are Bob, a baker."),
        Message("user", "Hi!"),
        Message("assistant", "Hello, I bake bread."),
        Message("user", "What do you bake?"),
        Message("assistant", "Rye and sourdough."),
    )
    # Without a system block the description becomes the system turn.
    assert data.train[1].messages == (
        Message("system", "Sir K is a knight."),
        Message("user", "Who are you?"),
        Message("assistant", "A knight."),
    )


def test_tweetsumm_clean_text_follows_the_tutorial():
    assert clean_text("@AirNova my  flight\n was cancelled https://t.co/x1 ^AB") == " my flight was cancelled "


@pytest.mark.parametrize("info_as_string", [False, True])
def test_tweetsumm_dialogstudio_json(tmp_path, info_as_string):
    dialog = tweetsumm_dialog(
        [("@Brand my order  is late https://t.co/abc", "@123 Sorry! DM us. ^JK"), ("@Brand done", "@123 Fixed. ^JK")],
        [["Order was late.", "Agent fixed it."], ["Second annotator."]],
        info_as_string,
    )
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"TweetSumm--train--1": dialog}))
    data = load_tweetsumm([train], None)
    (conv,) = data.train
    assert conv.messages == (
        Message("system", SYSTEM_PROMPT),
        Message("user", "user: my order is late\nagent: Sorry! DM us.\nuser: done\nagent: Fixed."),
        Message("assistant", "Order was late. Agent fixed it."),
    )  # first annotator only
    assert data.val is None and data.kind == "tweetsumm"


def test_oasst1_best_ranked_path_and_language_filter(tmp_path):
    rows = [
        oasst_row("r", None, "Q1", "prompter"),
        oasst_row("a_bad", "r", "meh", "assistant", rank=1),
        oasst_row("a_best", "r", "great", "assistant", rank=0),
        oasst_row("q2", "a_best", "Q2", "prompter"),
        oasst_row("q2_other", "a_bad", "ignored", "prompter"),
        oasst_row("a2", "q2", "answer 2", "assistant"),  # only child, rank null
        oasst_row("gone", "q2", "deleted best", "assistant", rank=0, deleted=True),
        oasst_row("r2", None, "Hola", "prompter", lang="es", tree="t2"),
        oasst_row("r2a", "r2", "Buenas", "assistant", lang="es", tree="t2"),
    ]
    path = write_oasst_parquet(tmp_path / "train.parquet", rows)
    data = load_oasst1([path], None, lang="en")
    assert [c.messages for c in data.train] == [
        (Message("user", "Q1"), Message("assistant", "great"), Message("user", "Q2"), Message("assistant", "answer 2"))
    ]
    assert data.filtered == 1 and data.records == 2
    both = load_oasst1([path], None, lang=None)
    assert len(both.train) == 2 and both.train[1].messages[-1] == Message("assistant", "Buenas")


def test_local_shapes_are_detected(tmp_path):
    cases = {
        "messages": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
        "prompt_completion": {"prompt": "Hi", "completion": "Yo"},
    }
    for shape, record in cases.items():
        data = load_local(write_jsonl(tmp_path / f"{shape}.jsonl", [record]))
        assert data.kind == shape
        assert data.train[0].messages == (Message("user", "Hi"), Message("assistant", "Yo"))
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps(
            [
                {"instruction": "Sum", "input": "1+1", "output": "2"},
                {"instruction": "Say hi", "input": "", "output": "hi"},
            ]
        )
    )
    data = load_local(alpaca)
    assert data.kind == "alpaca"
    # instruction + input is the user turn (TRL's and axolotl's reading), never a system turn
    assert data.train[0].messages == (Message("user", "Sum\n\n1+1"), Message("assistant", "2"))
    assert data.train[1].messages == (Message("user", "Say hi"), Message("assistant", "hi"))
    text = load_local(write_jsonl(tmp_path / "t.jsonl", [{"text": "plain words"}]))
    assert text.kind == "text" and text.train[0].text == "plain words"


def test_parquet_local_file_and_forced_shape(tmp_path):
    path = tmp_path / "pc.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "A", "completion": "B", "text": "ignored"}]), path)
    assert load_local(path).kind == "prompt_completion"
    forced = load_local(path, shape="text")
    assert forced.kind == "text" and forced.train[0].text == "ignored"


def test_messages_repairs_and_weight_zero(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final", "weight": 1},
            {"role": "user", "content": "dangling"},
        ]
    }
    (conv,) = load_local(write_jsonl(tmp_path / "m.jsonl", [record])).train
    assert conv.messages == (
        Message("user", "a\n\nb"),
        Message("assistant", "draft", train=False),
        Message("user", "again"),
        Message("assistant", "final"),
    )


def test_bundled_samples_all_load():
    for name, kind, at_least in [
        ("samples/roleplay", "roleplay", 200),
        ("samples/tweetsumm", "tweetsumm", 40),
        ("samples/oasst1", "oasst1", 10),
        ("samples/messages", "messages", 10),
        ("samples/prompt_completion", "prompt_completion", 10),
        ("samples/alpaca", "alpaca", 10),
        ("samples/sharegpt", "sharegpt", 10),
        ("samples/text", "text", 10),
    ]:
        data = load_source(name)
        assert data.kind == kind and len(data.train) >= at_least, name
        assert all(c.has_target for c in data.train), name


def test_unknown_option_is_rejected():
    with pytest.raises(DataError, match="does not take option"):
        load_source("samples/roleplay", lang="en")
