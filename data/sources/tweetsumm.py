"""Salesforce/dialogstudio, TweetSumm part: dialogs of customer-support tweets with
human summaries, cleaned and laid out as the public tutorials do."""

from __future__ import annotations

import json
import re
from pathlib import Path

from philora.data.conversation import Message, make_conversation
from philora.data.errors import DataError
from philora.data.sources.base import SourceData
from philora.data.sources.records import read_records, require_fields

REPO_ID = "Salesforce/dialogstudio"
FOLDER = "dialogue_summarization/TweetSumm"
SYSTEM_PROMPT = "Below is a conversation between a human and an AI agent. Write a summary of the conversation."

# The tutorial's four substitutions, in its order: links, @mentions, whitespace runs, ^XY sign-offs.
_CLEANERS = (
    (re.compile(r"http\S+"), ""),
    (re.compile(r"@[^\s]+"), ""),
    (re.compile(r"\s+"), " "),
    (re.compile(r"\^[^ ]+"), ""),
)


def clean_text(text: str) -> str:
    """Remove links, mentions and agent sign-offs, and collapse whitespace, as the tutorial does."""
    for pattern, replacement in _CLEANERS:
        text = pattern.sub(replacement, text)
    return text


def dialog_to_conversation(record: dict, where: str):
    """One dialog -> [system prompt, ``user: ... / agent: ...`` lines, first abstractive summary]."""
    require_fields(record, ("log", "original dialog info"), where)
    info = record["original dialog info"]
    if isinstance(info, str):  # load_dataset stores it as a JSON string, the raw files as a dict
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'original dialog info' is not valid JSON") from None
    try:
        summary = " ".join(info["summaries"]["abstractive_summaries"][0])
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{where}: field 'original dialog info' has no summaries.abstractive_summaries[0]") from None
    lines = []
    for turn, entry in enumerate(record["log"]):
        require_fields(entry, ("user utterance", "system response"), f"{where} log turn {turn}")
        lines.append(f"user: {clean_text(entry['user utterance']).strip()}")
        lines.append(f"agent: {clean_text(entry['system response']).strip()}")
    conversation_text = "\n".join(lines).strip()
    return make_conversation(
        [Message("system", SYSTEM_PROMPT), Message("user", conversation_text), Message("assistant", summary)],
        where,
        {"shape": "tweetsumm"},
    )


def load_tweetsumm(train_files: list[Path], val_files: list[Path] | None, name: str = "tweetsumm") -> SourceData:
    """Parse TweetSumm dialog files (dicts keyed ``TweetSumm--<split>--<n>``)."""

    def parse(files):
        return [dialog_to_conversation(record, where) for path in files for where, record in read_records(path)]

    train = parse(train_files)
    val = parse(val_files) if val_files else None
    return SourceData(name=name, kind="tweetsumm", train=train, val=val, records=len(train) + len(val or []))
