"""Hub sources resolve from a real HF cache layout offline; bad input gets one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants

import phi_models.hub
from philora.data import prepare
from philora.data.errors import DataError
from philora.data.sources import load_source
from philora.data.sources.registry import SAMPLES_DIR
from tests.data.conftest import write_jsonl

SHA = "b239442a322d1218b79b47da549d6e0e0ec7482b"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty HF hub cache in tmp, offline; returns a function that adds a dataset file to it."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def add(repo_id: str, filename: str, source: Path) -> None:
        repo = cache / ("datasets--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(SHA)
        target = repo / "snapshots" / SHA / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)

    return add


def test_named_sources_resolve_from_the_cache_offline(offline_cache):
    offline_cache(
        "hieunguyenminh/roleplay",
        "data/train-00000-of-00001.parquet",
        SAMPLES_DIR / "roleplay/data/train-00000-of-00001.parquet",
    )
    for split in ("train", "val"):
        offline_cache(
            "Salesforce/dialogstudio",
            f"dialogue_summarization/TweetSumm/{split}/dialogues_1.json",
            SAMPLES_DIR / f"tweetsumm/dialogue_summarization/TweetSumm/{split}/dialogues_1.json",
        )
    for name in ("train-00000-of-00001-b42a775f407cee45.parquet", "validation-00000-of-00001-134b8fd0c89408b6.parquet"):
        offline_cache("OpenAssistant/oasst1", f"data/{name}", SAMPLES_DIR / "oasst1/data" / name)
    for name in ("roleplay", "tweetsumm", "oasst1"):
        hub, bundled = load_source(name), load_source(f"samples/{name}")
        assert hub.kind == bundled.kind == name
        assert [c.messages for c in hub.train] == [c.messages for c in bundled.train]
        assert (hub.val is None) == (bundled.val is None)


def test_offline_without_cached_copy(offline_cache):
    with pytest.raises(DataError, match=r"not in the local cache and HF_HUB_OFFLINE is set") as err:
        load_source("oasst1")
    assert "data/train-00000-of-00001-b42a775f407cee45.parquet" in str(err.value)
    assert "\n" not in str(err.value)


def test_gated_repo_without_access(monkeypatch):
    httpx = pytest.importorskip("httpx2")
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/x"))
        raise GatedRepoError("403 Client Error", response=response)

    monkeypatch.setattr(phi_models.hub, "hf_hub_download", gated)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match=r"Salesforce/dialogstudio' is gated: accept its terms .* set HF_TOKEN"):
        load_source("tweetsumm")


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        load_source(str(path))


def test_missing_field_lists_the_fields_found(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "text": "hi"}]}])
    with pytest.raises(
        DataError,
        match=r"m\.jsonl:1 turn 0: missing field\(s\) \['content'\]; "
        r"the record has \['role', 'text'\]",
    ):
        load_source(str(path))
    forced = write_jsonl(tmp_path / "f.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(
        DataError, match=r"f\.jsonl:1: missing field\(s\) \['text'\]; the record has \['completion', 'prompt'\]"
    ):
        load_source(str(forced), shape="text")


def test_missing_field_in_parquet_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from philora.data.sources.roleplay import load_roleplay

    path = tmp_path / "rp.parquet"
    pq.write_table(pa.Table.from_pylist([{"name": "A", "description": "d"}]), path)
    with pytest.raises(
        DataError, match=r"rp\.parquet row 0: missing field\(s\) \['text'\]; the record has \['description', 'name'\]"
    ):
        load_roleplay([path])


def test_unknown_shape(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"odd\.jsonl:1: unknown record shape, fields found \['answer', 'question'\]"):
        load_source(str(path))
    with pytest.raises(DataError, match="shape='csv' is not a known shape"):
        load_source(str(path), shape="csv")


def test_unknown_role_and_source(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"conversations": [{"from": "narrator", "value": "x"}]}])
    with pytest.raises(DataError, match=r"r\.jsonl:1 turn 0: unknown role 'narrator'"):
        load_source(str(path))
    with pytest.raises(DataError, match="unknown data source 'nope.jsonl'"):
        load_source("nope.jsonl")
    with pytest.raises(DataError, match="unknown bundled sample 'samples/nope'"):
        load_source("samples/nope")


def test_empty_dataset_after_filtering(tiny_tok):
    with pytest.raises(
        DataError,
        match=r"samples/oasst1: no training examples left after filtering \(\d+ read, "
        r"\d+ filtered",
    ):
        prepare("samples/oasst1", tiny_tok, lang="fr")


def test_json_document_errors(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(DataError, match=r"doc\.json:2: malformed JSON"):
        load_source(str(path))
    path.write_text(json.dumps({"a": 1, "b": "x"}))
    with pytest.raises(DataError, match=r"doc\.json: expected a JSON list of records or a dict of records"):
        load_source(str(path))
