"""Shared fixtures for the data tests: the tiny tokenizer and writers of real-schema files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from phi_models.presets import tiny_tokenizer_path
from phi_models.tokenizer import PhiTokenizer


@pytest.fixture(scope="session")
def tiny_tok() -> PhiTokenizer:
    """The bundled tiny tokenizer as phi_models loads it, with pad == eos as on every Phi model."""
    backend = Tokenizer.from_file(str(tiny_tokenizer_path()))
    return PhiTokenizer(
        backend,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_format=None,
        name="tiny-test",
    )


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def oasst_row(message_id, parent_id, text, role, *, rank=None, lang="en", tree="t1", deleted=False) -> dict:
    """One oasst1 message with the real column set (values that matter to us, the rest plausible)."""
    return {
        "message_id": message_id,
        "parent_id": parent_id,
        "user_id": "u" + message_id,
        "created_date": "2023-02-10T12:00:00.000000+00:00",
        "text": text,
        "role": role,
        "lang": lang,
        "review_count": 3,
        "review_result": True,
        "deleted": deleted,
        "rank": rank,
        "synthetic": False,
        "model_name": None,
        "detoxify": {
            "toxicity": 0.0,
            "severe_toxicity": 0.0,
            "obscene": 0.0,
            "identity_attack": 0.0,
            "insult": 0.0,
            "threat": 0.0,
            "sexual_explicit": 0.0,
        },
        "message_tree_id": tree,
        "tree_state": "ready_for_export",
        "emojis": {"name": ["+1"], "count": [1]},
        "labels": {"name": ["quality"], "value": [0.8], "count": [3]},
    }


def write_oasst_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def tweetsumm_dialog(turns, summaries, info_as_string=False) -> dict:
    """A DialogStudio TweetSumm dialog in the raw-file layout."""
    info = {
        "summaries": {
            "extractive_summaries": [[{"is_agent": False, "sentences": [turns[0][0]]}]],
            "abstractive_summaries": summaries,
        }
    }
    return {
        "original dialog id": "b065262210783596c1fe79466b8f8985",
        "dialog index": 1,
        "original dialog info": json.dumps(info) if info_as_string else info,
        "log": [
            {
                "turn id": i + 1,
                "user utterance": u,
                "system response": s,
                "dialog history": "",
                "original user side information": {},
                "original system side information": {},
            }
            for i, (u, s) in enumerate(turns)
        ],
        "prompt": [],
    }
