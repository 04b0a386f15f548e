"""Local JSONL/JSON/parquet files in the common record shapes, detected from their keys."""

from __future__ import annotations

from pathlib import Path

from ..conversation import Conversation, Message, make_conversation, normalize_role
from ..errors import DataError
from .base import SourceData
from .records import read_records, require_fields

# Shape name -> the keys that identify it, checked in this order (first match wins).
SHAPES = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}


def detect_shape(record: dict, where: str) -> str:
    """Name the shape of one record from its keys, or raise listing the keys found."""
    for shape, keys in SHAPES.items():
        if all(k in record for k in keys):
            return shape
    expected = " | ".join("+".join(keys) for keys in SHAPES.values())
    raise DataError(f"{where}: unknown record shape, fields found {sorted(record)}; expected one of "
                    f"{expected}, or force one with shape=")


def _message_list(items, where: str, role_key: str, content_key: str) -> list[Message]:
    if not isinstance(items, list):
        raise DataError(f"{where}: expected a list of messages, got {type(items).__name__}")
    messages = []
    for turn, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where} turn {turn}: expected an object with {role_key!r} and {content_key!r}")
        require_fields(item, (role_key, content_key), f"{where} turn {turn}")
        content = item[content_key]
        if not isinstance(content, str):
            raise DataError(f"{where} turn {turn}: field {content_key!r} must be a string, got {type(content).__name__}")
        # OpenAI-style files switch an assistant turn out of the loss with weight 0.
        train = item.get("weight", 1) not in (0, 0.0, False)
        messages.append(Message(normalize_role(item[role_key], f"{where} turn {turn}"), content, train))
    return messages


def _text_field(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def record_to_conversation(record: dict, shape: str, where: str) -> Conversation:
    """Convert one record of a known shape into a conversation."""
    require_fields(record, SHAPES[shape], where)
    if shape == "messages":
        return make_conversation(_message_list(record["messages"], where, "role", "content"), where)
    if shape == "sharegpt":
        return make_conversation(_message_list(record["conversations"], where, "from", "value"), where)
    if shape == "alpaca":
        # The instruction is the task; a non-empty input is the material it applies to.
        instruction = _text_field(record, "instruction", where)
        extra = _text_field(record, "input", where)
        messages = [Message("system", instruction), Message("user", extra)] if extra.strip() else [Message("user", instruction)]
        return make_conversation(messages + [Message("assistant", _text_field(record, "output", where))], where,
                                 {"shape": "alpaca"})
    if shape == "prompt_completion":
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
            messages = _message_list(prompt, where, "role", "content") + _message_list(completion, where, "role", "content")
            return make_conversation(messages, where)
        messages = [Message("user", _text_field(record, "prompt", where)),
                    Message("assistant", _text_field(record, "completion", where))]
        return make_conversation(messages, where, {"shape": "prompt_completion"})
    return Conversation(text=_text_field(record, "text", where), origin=where)


def load_local(path: str | Path, *, shape: str | None = None, name: str | None = None) -> SourceData:
    """Parse a local file; the shape is detected from the first record unless forced."""
    if shape is not None and shape not in SHAPES:
        raise DataError(f"shape={shape!r} is not a known shape; use one of {sorted(SHAPES)}")
    conversations, detected = [], shape
    for where, record in read_records(path):
        if detected is None:
            detected = detect_shape(record, where)
        conversations.append(record_to_conversation(record, detected, where))
    if detected is None:
        raise DataError(f"{path}: the file holds no records")
    return SourceData(name=name or str(path), kind=detected, train=conversations, records=len(conversations))
