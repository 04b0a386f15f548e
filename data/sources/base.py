"""What every source returns."""

from __future__ import annotations

from dataclasses import dataclass

from philora.data.conversation import Conversation


@dataclass
class SourceData:
    """Parsed conversations of one source.

    ``kind`` picks the default prompt format (``roleplay``, ``tweetsumm``, ``oasst1``,
    or a local shape name). ``val`` is the source's own validation split, or None when
    it has none (a fraction of ``train`` is then held out). ``filtered`` counts records
    dropped on purpose (e.g. by the language filter) and ``records`` all records read.
    """

    name: str
    kind: str
    train: list[Conversation]
    val: list[Conversation] | None = None
    records: int = 0
    filtered: int = 0
