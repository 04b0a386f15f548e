"""The bundled samples are in the real schemas, reproducible from their script, and the tiny
tokenizer has Phi's special tokens as single ids."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
from tokenizers import Tokenizer

from phi_models.presets import tiny_tokenizer_path
from philora.data.samples import make_samples
from philora.data.sources.registry import SAMPLES_DIR


def test_roleplay_sample_is_what_the_script_generates():
    table = pq.read_table(SAMPLES_DIR / "roleplay/data/train-00000-of-00001.parquet")
    assert table.column_names == ["name", "description", "text"] and table.num_rows >= 200
    assert table.to_pylist() == make_samples._roleplay_rows(random.Random(make_samples.SEED))


def test_tweetsumm_and_oasst1_samples_have_the_real_fields():
    dialogs = json.loads(
        (SAMPLES_DIR / "tweetsumm/dialogue_summarization/TweetSumm/train/dialogues_1.json").read_text()
    )
    key, dialog = next(iter(dialogs.items()))
    assert key.startswith("TweetSumm--train--")
    assert set(dialog) == {"original dialog id", "dialog index", "original dialog info", "log", "prompt"}
    assert set(dialog["log"][0]) == {
        "turn id",
        "user utterance",
        "system response",
        "dialog history",
        "original user side information",
        "original system side information",
    }
    oasst = pq.read_table(SAMPLES_DIR / "oasst1/data/train-00000-of-00001-b42a775f407cee45.parquet")
    assert set(oasst.column_names) == {
        "message_id",
        "parent_id",
        "user_id",
        "created_date",
        "text",
        "role",
        "lang",
        "review_count",
        "review_result",
        "deleted",
        "rank",
        "synthetic",
        "model_name",
        "detoxify",
        "message_tree_id",
        "tree_state",
        "emojis",
        "labels",
    }


def test_tiny_tokenizer_special_tokens_and_size():
    tok = Tokenizer.from_file(str(tiny_tokenizer_path()))
    assert tok.get_vocab_size() <= 2048
    text = "<|system|>\nHi<|end|>\n<|user|>\nYo<|end|>\n<|assistant|>\nHey<|end|>\n<|endoftext|>"
    ids = tok.encode(text, add_special_tokens=False).ids
    for special in make_samples.SPECIAL_TOKENS:
        assert tok.token_to_id(special) in ids, special
    assert tok.decode(ids, skip_special_tokens=False) == text  # byte-level: exact round trip
    assert tok.decode(tok.encode("naïve café ✓").ids) == "naïve café ✓"


def test_make_samples_regenerates_every_bundled_file_byte_for_byte(tmp_path):
    make_samples.main(tmp_path / "samples", tmp_path / "tokenizer.json")
    bundled = sorted(p.relative_to(SAMPLES_DIR) for p in SAMPLES_DIR.rglob("*") if p.is_file())
    bundled = [p for p in bundled if p.suffix != ".py" and "__pycache__" not in p.parts]
    written = sorted(p.relative_to(tmp_path / "samples") for p in (tmp_path / "samples").rglob("*") if p.is_file())
    assert written == bundled
    for relative in bundled:
        assert (tmp_path / "samples" / relative).read_bytes() == (SAMPLES_DIR / relative).read_bytes(), relative
    assert (tmp_path / "tokenizer.json").read_bytes() == tiny_tokenizer_path().read_bytes()
