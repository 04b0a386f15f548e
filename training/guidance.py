"""Messages that help a first-time user: one-line argument errors with "did you mean", small-data notes.

Each helper returns text (or raises the package's error) so run.py/config.py stay short.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable
from typing import NoReturn


def did_you_mean(word: str, options: Iterable[str], *, quote: bool = False) -> str:
    """``" (did you mean X?)"`` for the closest of ``options`` to ``word``, else ``""``."""
    options = list(options)
    # A flag that begins the word (--lr for --lr-rate) or that the word begins is the likeliest meaning.
    related = [o for o in options if len(o.strip("-")) >= 2 and (word.startswith(o) or o.startswith(word))]
    close = difflib.get_close_matches(word, related, n=1, cutoff=0.0) if related else []
    close = close or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {close[0]!r}?)" if quote else f" (did you mean {close[0]}?)"


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit 2), never the whole usage.

    An unknown flag gets the closest known one; a bad choice lists the valid ones (argparse's own
    message already does), and the line ends pointing at ``--help``.
    """

    def known_flags(self) -> list[str]:
        """Every option string of the parser (``--lr``, ``--no-packing``, ...)."""
        return [flag for action in self._actions for flag in action.option_strings]

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` (with a suggestion) on one line and exit 2."""
        match = re.match(r"unrecognized arguments: (.*)", message)
        if match:
            flags = [arg.split("=", 1)[0] for arg in match.group(1).split() if arg.startswith("-")]
            hints = [f"{flag}{did_you_mean(flag, self.known_flags())}" for flag in flags]
            message = f"unknown option(s) {', '.join(hints) if hints else match.group(1)}"
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = [o.strip().strip("'\"") for o in choice.group(2).split(",")]
            message += did_you_mean(choice.group(1), options)
        message = " ".join(message.split())  # argparse may wrap; keep one line
        sys.stderr.write(f"{self.prog}: error: {message}; see {self.prog} --help\n")
        sys.exit(2)


def small_data_note(
    total_steps: int,
    batches_per_epoch: int,
    examples: int,
    batch_size: int,
    grad_accum: int,
    epochs: float,
    max_steps: int | None,
    warmup_steps: int,
    wanted: int = 10,
) -> str | None:
    """A note when the run has fewer than ``wanted`` optimizer steps, suggesting --epochs; else None."""
    if total_steps >= wanted or max_steps is not None:
        return None
    per_epoch = max(1, -(-batches_per_epoch // grad_accum))
    suggested = max(1, -(-wanted // per_epoch))
    warm = f"; {warmup_steps} of them warm up, so the lr never reaches its peak for long" if warmup_steps else ""
    return (
        f"note: only {total_steps} optimizer step{'s' if total_steps != 1 else ''} "
        f"({examples} training examples -> {batches_per_epoch} batch{'es' if batches_per_epoch != 1 else ''} "
        f"of {batch_size} per epoch, accum {grad_accum}, {epochs:g} epoch{'s' if epochs != 1 else ''}){warm}; "
        f"pass --epochs {suggested} (or --max-steps) to train about {suggested * per_epoch} steps"
    )


def empty_reply_note(new_ids: list[int], reply: str, tokenizer) -> str | None:
    """Why a sample reply is empty (stopped at once, or only whitespace/special tokens); None if not empty."""
    if reply.strip():
        return None
    if not new_ids:
        stops = ", ".join(tokenizer.decode([i], skip_special_tokens=False) for i in tokenizer.stop_token_ids)
        return (
            f"(empty: the first token generated was a stop token ({stops}), so generation stopped at once; "
            f"common after very few steps: train longer or try another --sample-prompt)"
        )
    shown = tokenizer.decode(new_ids, skip_special_tokens=False)[:80]
    return f"(empty: the model generated only whitespace or special tokens: {shown!r})"


def session_summary(
    state, start_step: int, session_seconds: float, session_tokens: int, tok_rate: float, peak_mib: float
) -> str:
    """The "done:" line, with the run's totals and this session's share labelled apart (they differ on resume)."""
    from philora.training.progress import format_duration

    if start_step == 0:
        return (
            f"done: {state.step} steps, {format_duration(state.elapsed)}, {session_tokens:,} tokens at "
            f"{tok_rate:,.0f} tok/s, peak memory {peak_mib:,.0f} MiB"
        )
    return (
        f"done: run total {state.step} steps, {format_duration(state.elapsed)}, {state.tokens_seen:,} target "
        f"tokens; this session {state.step - start_step} steps (from step {start_step}), {session_seconds:.1f} s, "
        f"{session_tokens:,} tokens at {tok_rate:,.0f} tok/s, peak memory {peak_mib:,.0f} MiB"
    )
