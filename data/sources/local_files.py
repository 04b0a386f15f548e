"""Local JSONL/JSON/parquet/CSV/TSV files in the common record shapes, detected from their keys."""

from __future__ import annotations

from pathlib import Path

from philora.data.conversation import Conversation, Message, make_conversation, normalize_role
from philora.data.errors import DataError
from philora.data.sources.base import SourceData
from philora.data.sources.records import read_records, require_fields

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
    raise DataError(
        f"{where}: unknown record shape, fields found {sorted(record)}; expected one of "
        f"{expected}, or force one with shape="
    )


def parse_columns(spec: str | dict | None) -> dict[str, str]:
    """``"prompt=question,completion=answer"`` -> ``{"question": "prompt", "answer": "completion"}``
    (the file's column -> the field name the shapes use)."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = [part.partition("=")[::2] for part in str(spec).split(",") if part.strip()]
    mapping: dict[str, str] = {}
    for ours, theirs in pairs:
        ours, theirs = str(ours).strip(), str(theirs).strip()
        if not ours or not theirs:
            raise DataError(
                f"columns={spec!r}: write FIELD=COLUMN pairs separated by commas, "
                f"e.g. prompt=question,completion=answer"
            )
        if theirs in mapping:
            raise DataError(f"columns={spec!r}: column {theirs!r} is mapped twice")
        mapping[theirs] = ours
    return mapping


def rename_columns(record: dict, mapping: dict[str, str], where: str) -> dict:
    """``record`` with its mapped columns renamed; a mapped column the record lacks is an error."""
    if not mapping:
        return record
    missing = [column for column in mapping if column not in record]
    if missing:
        raise DataError(
            f"{where}: --columns names column(s) {missing} that the record does not have; "
            f"its columns are {sorted(record)}"
        )
    renamed = {k: v for k, v in record.items() if k not in mapping}
    renamed.update({mapping[column]: record[column] for column in mapping})
    return renamed


def _content_text(content, where: str, content_key: str) -> str:
    # OpenAI-style content may be a list of parts; text parts are joined, anything else cannot be trained on.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for number, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DataError(
                    f"{where}: content part {number} is {kind!r}; only text parts "
                    f'({{"type": "text", "text": ...}}) can be trained on, so remove the others'
                )
        return "".join(texts)
    raise DataError(
        f"{where}: field {content_key!r} must be a string or a list of text parts, got {type(content).__name__}"
    )


def _message_list(items, where: str, role_key: str, content_key: str) -> list[Message]:
    if not isinstance(items, list):
        raise DataError(f"{where}: expected a list of messages, got {type(items).__name__}")
    messages = []
    for turn, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where} turn {turn}: expected an object with {role_key!r} and {content_key!r}")
        require_fields(item, (role_key, content_key), f"{where} turn {turn}")
        content = _content_text(item[content_key], f"{where} turn {turn}", content_key)
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
        # The instruction (and its input, after a blank line) is the user turn, as in TRL and axolotl;
        # the alpaca prompt template reads the two parts from meta to write its ### Input: section.
        instruction = _text_field(record, "instruction", where)
        extra = _text_field(record, "input", where)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        meta = {"shape": "alpaca", "instruction": instruction, "input": extra if extra.strip() else ""}
        return make_conversation(
            [Message("user", user), Message("assistant", _text_field(record, "output", where))], where, meta
        )
    if shape == "prompt_completion":
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
            messages = _message_list(prompt, where, "role", "content") + _message_list(
                completion, where, "role", "content"
            )
            return make_conversation(messages, where)
        messages = [
            Message("user", _text_field(record, "prompt", where)),
            Message("assistant", _text_field(record, "completion", where)),
        ]
        return make_conversation(messages, where, {"shape": "prompt_completion"})
    return Conversation(text=_text_field(record, "text", where), origin=where)


def check_shape(shape: str | None) -> str | None:
    """``shape`` if it is None or a known shape name, else a one-line error listing them."""
    if shape is not None and shape not in SHAPES:
        raise DataError(f"shape={shape!r} is not a known shape; use one of {sorted(SHAPES)}")
    return shape


def parse_records(records, *, shape: str | None = None, columns=None) -> tuple[list[Conversation], str | None]:
    """Conversations from ``(origin, record)`` pairs; the shape is detected from the first record unless forced."""
    check_shape(shape)
    mapping = parse_columns(columns)
    conversations, detected = [], shape
    for where, record in records:
        record = rename_columns(record, mapping, where)
        if detected is None:
            detected = detect_shape(record, where)
        conversations.append(record_to_conversation(record, detected, where))
    return conversations, detected


def load_local(path: str | Path, *, shape: str | None = None, name: str | None = None, columns=None) -> SourceData:
    """Parse a local file; the shape is detected from the first record unless forced (``columns`` renames first)."""
    conversations, detected = parse_records(read_records(path), shape=shape, columns=columns)
    if detected is None:
        raise DataError(f"{path}: the file holds no records")
    return SourceData(name=name or str(path), kind=detected, train=conversations, records=len(conversations))
