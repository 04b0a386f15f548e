"""Rendered segments -> token ids and shifted targets with the loss mask built in."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from philora.data.errors import DataError
from philora.data.limits import text_char_budget

IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenized training example.

    ``targets[t]`` is the token to predict after ``input_ids[t]`` (already shifted), or
    -100 where nothing is learned. Both lists have the same length.
    """

    input_ids: list[int]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        """How many positions carry a loss."""
        return sum(1 for t in self.targets if t != IGNORE_INDEX)


@dataclass
class TokenizeResult:
    """The example (None when nothing is left to learn) and whether it was truncated."""

    example: Example | None
    truncated: bool
    num_tokens: int  # before truncation, the final EOS included (of the budgeted text for a huge record)


def _rendered(segments) -> tuple[str, list[int], list[bool]]:
    """The whole rendered text, the start offset of each non-empty segment, and its target flag."""
    starts, flags, parts, at = [], [], [], 0
    for segment in segments:
        if segment.text:
            starts.append(at)
            flags.append(segment.is_target)
            parts.append(segment.text)
            at += len(segment.text)
    return "".join(parts), starts, flags


def _token_flags(offsets, starts: list[int], flags: list[bool]) -> list[bool]:
    """Whether each token (by its character span) is target text.

    A token belongs to the segment holding its first character. In the chat formats a reply
    starts after a special token (or its newline) and ends with one, so the only straddler is
    a marker that swallows the newline after it (``<|end|>\\n`` in Phi-3 revisions whose
    markers have ``rstrip``). A straddling token goes with where it starts: one that ends a
    reply (``<|end|>\\n``, or ``!###`` in a base template) is learned, as the reply cannot be
    finished without it; one reaching from the prompt into the reply is not, since generation
    encodes the prompt alone and never emits it.
    """
    out = []
    for start, _ in offsets:
        index = bisect.bisect_right(starts, start) - 1
        out.append(index >= 0 and flags[index])
    return out


def _encode_with_offsets(tokenizer, texts: list[str]):
    # Character offsets come from the wrapped `tokenizers` backend (PhiTokenizer.backend).
    backend = getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        raise DataError(
            f"tokenizer {type(tokenizer).__name__} has no `backend` tokenizers.Tokenizer to take "
            f"token offsets from; pass a phi_models.PhiTokenizer (phi_models.load_tokenizer)"
        )
    return backend.encode_batch(texts, add_special_tokens=False)


def _build(ids: list[int], learn: list[bool], eos_id: int, max_seq_len: int, train_on_prompt: bool) -> TokenizeResult:
    ids = list(ids)
    learn = [flag or train_on_prompt for flag in learn]
    ids.append(eos_id)
    learn.append(True)
    total = len(ids)
    # max_seq_len inputs need max_seq_len + 1 tokens: the last token is only ever a target.
    truncated = total > max_seq_len + 1
    if truncated:
        ids, learn = ids[: max_seq_len + 1], learn[: max_seq_len + 1]
    targets = [token if keep else IGNORE_INDEX for token, keep in zip(ids[1:], learn[1:])]
    if all(t == IGNORE_INDEX for t in targets):
        return TokenizeResult(None, truncated, total)
    return TokenizeResult(Example(input_ids=ids[:-1], targets=targets), truncated, total)


def tokenize_segments(segments, tokenizer, *, max_seq_len: int, train_on_prompt: bool = False) -> TokenizeResult:
    """Encode the rendered text, append the EOS, and build shifted targets.

    The segments are joined and encoded as one string, as generation encodes a prompt
    (encoded one by one, SentencePiece-style tokenizers such as Phi-3's would start every
    segment with an extra "▁"). The mask comes from each token's character span against the
    target segments' spans (see :func:`_token_flags`), never from comparing ids with the pad
    id, so the EOS (which is also Phi's pad) is always learned. The sequence is cut to
    ``max_seq_len`` inputs (keeping the start); an example with no target left gives
    ``example=None``.
    """
    return tokenize_many([segments], tokenizer, max_seq_len=max_seq_len, train_on_prompt=train_on_prompt)[0]


def tokenize_many(segment_lists, tokenizer, *, max_seq_len: int, train_on_prompt: bool = False) -> list[TokenizeResult]:
    """:func:`tokenize_segments` for many examples: one string per example, all encoded in one batch call."""
    rendered = [_rendered(segments) for segments in segment_lists]
    _encode_with_offsets(tokenizer, [])  # the backend check, before the budget reads its vocabulary
    budget = text_char_budget(tokenizer, max_seq_len)  # a 50 MB record is cut before tokenizing, not after
    encodings = _encode_with_offsets(tokenizer, [text[:budget] for text, _, _ in rendered])
    return [
        _build(
            encoding.ids,
            _token_flags(encoding.offsets, starts, flags),
            tokenizer.eos_token_id,
            max_seq_len,
            train_on_prompt,
        )
        for encoding, (_, starts, flags) in zip(encodings, rendered)
    ]
