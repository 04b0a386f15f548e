"""Bounds on the work a data file can cause, checked before the work is done.

- Text: a record longer than ``max_seq_len`` tokens is cut to a character budget *before* it is
  tokenized. Every token covers at most ``longest_token_chars`` characters, so the first
  ``max_seq_len + 1`` tokens of a text lie within the first ``(max_seq_len + 1) * longest`` characters;
  the budget is twice that (plus slack), so the kept tokens are those of the whole text unless one
  pre-tokenizer word straddles the cut far beyond them.
- Lines: a JSONL line is read with a length cap; JSON files have a size cap.
- Parquet: a file whose decoded data outgrows its size by more than ``MAX_EXPANSION`` is a compression
  bomb; it is refused from the metadata (a huge single value) or while streaming in small batches
  (dictionary/RLE-encoded repetition), before the decoded data is held.
"""

from __future__ import annotations

MAX_LINE_CHARS = 256 << 20  # one JSONL record
MAX_JSON_FILE_BYTES = 4 << 30
MAX_EXPANSION = 100  # decoded bytes per stored byte; real text data compresses 2-10x
EXPANSION_FLOOR = 64 << 20  # files decoding to less than this are never called bombs
PARQUET_BATCH_ROWS = 64

_longest_token: dict[int, int] = {}


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` can cover (its longest vocabulary string)."""
    backend = tokenizer.backend
    key = id(backend)
    if key not in _longest_token:
        vocab = backend.get_vocab(with_added_tokens=True)
        _longest_token[key] = max((len(token) for token in vocab), default=1)
    return _longest_token[key]


def text_char_budget(tokenizer, max_seq_len: int) -> int:
    """Characters of a rendered example worth tokenizing for ``max_seq_len`` inputs (see the module doc)."""
    return 2 * (max_seq_len + 2) * longest_token_chars(tokenizer) + 4096


def expansion_limit(stored_bytes: int) -> int:
    """Most decoded bytes a parquet file of ``stored_bytes`` may produce."""
    return max(EXPANSION_FLOOR, MAX_EXPANSION * stored_bytes)
