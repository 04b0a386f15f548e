"""Data formats a new user brings: CSV/TSV, renamed columns, content parts, hub dataset repos, --eval-data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from philora.data import DataError, load_source, prepare
from philora.data.conversation import Message
from philora.data.sources.hub_dataset import data_files, split_of
from philora.data.templates import render
from tests.data.conftest import write_jsonl


def test_csv_and_tsv_detect_the_shape_and_keep_quoted_cells(tmp_path):
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text('prompt,completion\n"Say ""hi"", twice",hi hi\n\nWhat is 2+2?,4\n', encoding="utf-8")
    data = load_source(str(csv_file))
    assert data.kind == "prompt_completion" and data.records == 2
    assert data.train[0].messages == (Message("user", 'Say "hi", twice'), Message("assistant", "hi hi"))
    assert data.train[1].origin.endswith("qa.csv:4")
    tsv_file = tmp_path / "alpaca.tsv"
    tsv_file.write_text("instruction\tinput\toutput\nAdd\t1, 2\t3\n", encoding="utf-8")
    assert load_source(str(tsv_file)).train[0].messages[0] == Message("user", "Add\n\n1, 2")
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,completion\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:2: 3 cells but the header names 2 columns"):
        load_source(str(bad))


def test_columns_mapping_renames_before_detection(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Capital of France?", "answer": "Paris", "id": 1}])
    with pytest.raises(DataError, match="unknown record shape"):
        load_source(str(path))
    data = load_source(str(path), columns="prompt=question,completion=answer")
    assert data.kind == "prompt_completion"
    assert data.train[0].messages == (Message("user", "Capital of France?"), Message("assistant", "Paris"))
    wrong = r"names column\(s\) \['reply'\].*its columns are \['answer', 'id', 'question'\]"
    with pytest.raises(DataError, match=wrong):
        load_source(str(path), columns="prompt=question,completion=reply")
    with pytest.raises(DataError, match="FIELD=COLUMN"):
        load_source(str(path), columns="prompt")


def test_content_as_a_list_of_parts(tmp_path):
    parts = [{"type": "text", "text": "Describe "}, {"type": "text", "text": "this."}]
    ok = write_jsonl(
        tmp_path / "parts.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": parts},
                    {"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
                ]
            }
        ],
    )
    assert load_source(str(ok)).train[0].messages == (Message("user", "Describe this."), Message("assistant", "Sure."))
    image = write_jsonl(
        tmp_path / "image.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                    {"role": "assistant", "content": "a cat"},
                ]
            }
        ],
    )
    with pytest.raises(DataError, match=r"image\.jsonl:1 turn 0: content part 0 is 'image_url'; only text parts"):
        load_source(str(image))


def test_alpaca_instruction_and_input_are_the_user_turn_in_chat_templates(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "Translate to French", "input": "cat", "output": "chat"}]))
    conversation = load_source(str(path)).train[0]
    assert [m.role for m in conversation.messages] == ["user", "assistant"]
    chat = "".join(s.text for s in render(conversation, "phi3"))
    assert chat == "<|user|>\nTranslate to French\n\ncat<|end|>\n<|assistant|>\nchat<|end|>\n"
    alpaca = "".join(s.text for s in render(conversation, "alpaca"))
    assert "### Instruction:\nTranslate to French\n\n### Input:\ncat\n\n### Response:\nchat" in alpaca


def _fake_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    # huggingface_hub's cache layout: refs/main names the commit whose snapshot holds the files.
    root = cache / f"datasets--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for name, content in files.items():
        target = root / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _parquet_bytes(tmp_path: Path, rows: list[dict]) -> bytes:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.read_bytes()


def test_any_hub_dataset_repo_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    train = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(3)
    ]
    val = "".join(json.dumps(r) + "\n" for r in train[:1]).encode()
    _fake_hub_cache(
        tmp_path / "cache",
        "someone/chats",
        {
            "README.md": b"# card",
            "data/train-00000-of-00001.parquet": _parquet_bytes(tmp_path, train),
            "data/validation.jsonl": val,
            "extra/test.csv": b"prompt,completion\nx,y\n",
        },
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = load_source("someone/chats")
    assert data.kind == "messages" and len(data.train) == 3 and len(data.val) == 1
    assert data.train[0].origin == "someone/chats/data/train-00000-of-00001.parquet row 0"
    test = load_source("someone/chats", split="test")
    assert test.kind == "prompt_completion" and test.val is None
    with pytest.raises(DataError, match=r"has no split 'dev'.*\['test', 'train', 'validation'\]"):
        load_source("someone/chats", split="dev")
    with pytest.raises(
        DataError,
        match="dataset repo 'someone/other' is not in the local cache and HF_HUB_OFFLINE is set: pass --data a local",
    ):
        load_source("someone/other")


def test_split_and_subset_selection_follow_the_hub_file_conventions():
    files = [
        "README.md",
        ".gitattributes",
        "en/train-0.parquet",
        "en/validation-0.parquet",
        "fr/train-0.parquet",
        "dataset_infos.json",
        "misc/dev.json",
        "train.csv",
        "data.jsonl",
    ]
    assert split_of("en/validation-0.parquet") == "validation" and split_of("misc/dev.json") == "validation"
    assert split_of("data.jsonl") == "train" and split_of("test/part-1.parquet") == "test"
    assert data_files(files, None) == [
        "data.jsonl",
        "en/train-0.parquet",
        "en/validation-0.parquet",
        "fr/train-0.parquet",
        "misc/dev.json",
        "train.csv",
    ]
    assert data_files(files, "fr") == ["fr/train-0.parquet"]


def test_eval_data_replaces_the_held_out_split(tmp_path, tiny_tok):
    make = lambda n, tag: [{"prompt": f"{tag} {i}", "completion": f"answer {i}"} for i in range(n)]  # noqa: E731
    train = write_jsonl(tmp_path / "train.jsonl", make(6, "train"))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", make(2, "eval"))
    prepared = prepare(str(train), tiny_tok, eval_data=str(evaluation), val_fraction=0.5)
    assert len(prepared.train) == 6 and len(prepared.val) == 2
    report = str(prepared.report)
    assert "shape prompt_completion" in report and "template   plain (hand-written prompt format)" in report


def test_report_says_once_which_messages_a_shipped_template_drops(tmp_path):
    from tokenizers import Tokenizer

    from phi_models.presets import tiny_tokenizer_path
    from phi_models.shipped_template import ShippedTemplate
    from phi_models.tokenizer import PhiTokenizer

    # The April-2024 Phi-3 template's structure (system messages are not rendered) on the tiny tokenizer.
    april = (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
        "{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}"
        "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\\n'}}{% endif %}"
        "{% endfor %}"
    )
    tok = PhiTokenizer(
        Tokenizer.from_file(str(tiny_tokenizer_path())),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_format="phi3",
        chat_template=ShippedTemplate(april, "tokenizer_config.json"),
    )
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(4)
    ]
    prepared = prepare(str(write_jsonl(tmp_path / "chats.jsonl", rows)), tok, val_fraction=0.0)
    assert prepared.template == "model"
    report = str(prepared.report)
    assert report.count("dropped") == 1 and "4 system message(s): the model's template does not render them" in report
    assert "the model's own, from tokenizer_config.json, a phi3-family template" in report
