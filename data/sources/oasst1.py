"""OpenAssistant/oasst1: message rows forming trees; each tree becomes the conversation
along its best-ranked path (rank 0 at every level), as the QLoRA/Guanaco recipe does."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from philora.data.conversation import Message, make_conversation
from philora.data.errors import DataError
from philora.data.sources.base import SourceData
from philora.data.sources.records import read_records, require_fields

REPO_ID = "OpenAssistant/oasst1"
TRAIN_FILE = "data/train-00000-of-00001-b42a775f407cee45.parquet"
VAL_FILE = "data/validation-00000-of-00001-134b8fd0c89408b6.parquet"
FIELDS = ("message_id", "parent_id", "text", "role", "lang", "rank")


def _best_child(children: list[dict]) -> dict:
    # rank 0 is the most preferred; unranked siblings (rank None) come after ranked ones, file order breaks ties.
    return min(children, key=lambda m: (m["rank"] is None, m["rank"] if m["rank"] is not None else 0))


def flatten_trees(rows: list[tuple[str, dict]], lang: str | list[str] | None):
    """Return (conversations, number of trees filtered out by language)."""
    children: dict[str, list[dict]] = defaultdict(list)
    roots, origins = [], {}
    for where, row in rows:
        require_fields(row, FIELDS, where)
        if row.get("deleted"):
            continue
        origins[row["message_id"]] = where
        if row["parent_id"] is None:
            roots.append(row)
        else:
            children[row["parent_id"]].append(row)
    wanted = None if lang is None else ({lang} if isinstance(lang, str) else set(lang))
    conversations, filtered = [], 0
    for root in roots:
        if wanted is not None and root["lang"] not in wanted:
            filtered += 1
            continue
        path, node = [root], root
        while children.get(node["message_id"]):
            node = _best_child(children[node["message_id"]])
            path.append(node)
        messages = []
        for node in path:
            if node["role"] not in ("prompter", "assistant"):
                raise DataError(
                    f"{origins[node['message_id']]}: field 'role' is {node['role']!r}; "
                    "expected 'prompter' or 'assistant'"
                )
            messages.append(Message("user" if node["role"] == "prompter" else "assistant", node["text"]))
        conversations.append(make_conversation(messages, origins[root["message_id"]], {"lang": root["lang"]}))
    return conversations, filtered


def load_oasst1(
    train_files: list[Path], val_files: list[Path] | None, *, lang: str | list[str] | None = "en", name: str = "oasst1"
) -> SourceData:
    """Parse oasst1 parquet split(s); ``lang`` keeps only trees whose root is in that language (None keeps all)."""

    def parse(files):
        rows = [item for path in files for item in read_records(path)]
        return flatten_trees(rows, lang), len(
            {r.get("message_tree_id", w) for w, r in rows if r.get("parent_id") is None}
        )

    (train, filtered), trees = parse(train_files)
    val, val_trees = None, 0
    if val_files:
        (val, val_filtered), val_trees = parse(val_files)
        filtered += val_filtered
    return SourceData(name=name, kind="oasst1", train=train, val=val, records=trees + val_trees, filtered=filtered)
