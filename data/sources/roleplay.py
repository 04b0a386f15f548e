"""hieunguyenminh/roleplay: one parquet of (name, description, text); ``text`` packs the
whole chat with Zephyr-style markers and ``</s>`` turn ends, which we parse into turns."""

from __future__ import annotations

import re
from pathlib import Path

from philora.data.conversation import Conversation, Message, make_conversation
from philora.data.errors import DataError
from philora.data.sources.base import SourceData
from philora.data.sources.records import read_records, require_fields

REPO_ID = "hieunguyenminh/roleplay"
FILES = ("data/train-00000-of-00001.parquet",)

_MARKER = re.compile(r"<\|(system|user|assistant)\|>")


def parse_roleplay_text(text: str, description: str, where: str) -> Conversation:
    """Split a roleplay ``text`` on its role markers into turns.

    ``</s>`` is dropped wherever it occurs (it is Zephyr's end marker, not Phi's); the
    persona comes from the ``<|system|>`` block, or from ``description`` when the text
    has none.
    """
    if not isinstance(text, str):
        raise DataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
    text = text.replace("</s>", "")
    pieces = _MARKER.split(text)
    # pieces = [before, role1, content1, role2, content2, ...]
    if len(pieces) < 3:
        raise DataError(f"{where}: field 'text' has no <|user|>/<|assistant|> markers; is this the roleplay dataset?")
    messages = [Message(role, content.strip()) for role, content in zip(pieces[1::2], pieces[2::2])]
    if messages[0].role != "system" and description and description.strip():
        messages.insert(0, Message("system", description.strip()))
    return make_conversation(messages, where)


def load_roleplay(files: list[Path], name: str = "roleplay") -> SourceData:
    """Parse the roleplay parquet file(s)."""
    conversations = []
    for path in files:
        for where, record in read_records(path):
            require_fields(record, ("text",), where)
            conversations.append(parse_roleplay_text(record["text"], record.get("description") or "", where))
    return SourceData(name=name, kind="roleplay", train=conversations, records=len(conversations))
