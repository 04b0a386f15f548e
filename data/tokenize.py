"""Rendered segments -> token ids and shifted targets with the loss mask built in."""

from __future__ import annotations

from dataclasses import dataclass

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
    num_tokens: int  # before truncation, the final EOS included


def _runs(segments):
    # Join neighbouring segments of the same kind so each prompt or reply is encoded as one
    # string, the way the prompt is encoded at generation time.
    runs: list[list] = []
    for segment in segments:
        if not segment.text:
            continue
        if runs and runs[-1][1] == segment.is_target:
            runs[-1][0] += segment.text
        else:
            runs.append([segment.text, segment.is_target])
    return runs


def _build(pieces: list[list[int]], flags: list[bool], eos_id: int, max_seq_len: int,
           train_on_prompt: bool) -> TokenizeResult:
    ids: list[int] = []
    learn: list[bool] = []
    for piece, is_target in zip(pieces, flags):
        ids.extend(piece)
        learn.extend([is_target or train_on_prompt] * len(piece))
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
    """Encode segments, append the EOS, and build shifted targets.

    The mask comes from the segments' positions, never from comparing ids with the pad
    id, so the EOS (which is also Phi's pad) is always learned. The sequence is cut to
    ``max_seq_len`` inputs (keeping the start); an example with no target left gives
    ``example=None``.
    """
    return tokenize_many([segments], tokenizer, max_seq_len=max_seq_len, train_on_prompt=train_on_prompt)[0]


def tokenize_many(segment_lists, tokenizer, *, max_seq_len: int, train_on_prompt: bool = False) -> list[TokenizeResult]:
    """:func:`tokenize_segments` for many examples, encoding all texts in one batch call."""
    runs = [_runs(segments) for segments in segment_lists]
    texts = [text for example_runs in runs for text, _ in example_runs]
    if hasattr(tokenizer, "encode_batch"):
        encoded = tokenizer.encode_batch(texts)
    else:
        encoded = [tokenizer.encode(text) for text in texts]
    results, start = [], 0
    for example_runs in runs:
        pieces = encoded[start:start + len(example_runs)]
        start += len(example_runs)
        results.append(_build(pieces, [flag for _, flag in example_runs], tokenizer.eos_token_id,
                              max_seq_len, train_on_prompt))
    return results
