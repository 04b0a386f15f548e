"""Token ids -> text increments while generating, with stop strings matched on the decoded text.

Decoding token by token is wrong for both tokenizer kinds Phi uses: a byte-level BPE (phi-1.5/2)
splits one multi-byte character over several tokens, and a SentencePiece-style tokenizer (Phi-3)
turns a leading ``▁`` into a space that its decoder strips at the very start of a text. So a
``TextStream`` decodes a short window of recent ids twice (without and with the new token) and
emits only the difference, and holds text back while it ends in an incomplete character (U+FFFD)
or could still be the beginning of a stop string. The emitted pieces joined always equal
``tokenizer.decode(all ids)`` cut before the first stop string.
"""

from __future__ import annotations

from collections.abc import Iterable

from phi_models.errors import PhiModelError

_INCOMPLETE = "\ufffd"


def check_stop_strings(stop_strings: Iterable[str] | str | None) -> tuple[str, ...]:
    """Stop strings as a tuple of non-empty strings (a lone string is one stop string)."""
    if stop_strings is None:
        return ()
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    out = tuple(stop_strings)
    for s in out:
        if not isinstance(s, str) or not s:
            raise PhiModelError(f"stop strings must be non-empty strings, got {s!r}")
    return out


class TextStream:
    """Incremental detokenizer for one sequence of generated ids.

    ``push(id)`` returns the text that became final with this token (maybe ""); ``finish()``
    returns whatever is left. ``stopped`` turns True once a stop string appeared; the text
    then ends just before it and later pushes return "".
    """

    def __init__(self, tokenizer, stop_strings: Iterable[str] | str | None = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop_strings = check_stop_strings(stop_strings)
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.stopped = False
        self.stop_string: str | None = None
        self._prefix = 0  # window start: decoding ids[_prefix:_read] gave clean text
        self._read = 0  # ids[:_read] are in self._decoded
        self._decoded = ""  # clean decoded text so far (stop strings not yet cut)
        self._emitted = 0  # characters of _decoded handed out
        self._longest_stop = max((len(s) for s in self.stop_strings), default=0)

    @property
    def text(self) -> str:
        """All text handed out so far."""
        return self._decoded[: self._emitted]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the newly final text."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(_INCOMPLETE) and after.startswith(before):
            self._decoded += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: the rest of the text (incomplete characters decode as U+FFFD)."""
        if self.stopped:
            return ""
        full = self._decode(self.ids)
        if full.startswith(self._decoded):
            self._decoded = full
        else:  # a decoder that rewrites earlier text: keep what was handed out, add the full tail
            self._decoded = self._decoded[: self._emitted] + full[self._emitted :]
        self._read = self._prefix = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._decoded
        if self.stop_strings:
            # A stop string may straddle what was already checked: search from just before it.
            search_from = max(0, self._emitted - self._longest_stop + 1)
            hits = [(i, s) for s in self.stop_strings if (i := text.find(s, search_from)) >= 0]
            if hits:
                cut, self.stop_string = min(hits)
                self.stopped = True
                out = text[self._emitted : max(cut, self._emitted)]
                self._decoded = text[: max(cut, self._emitted)]
                self._emitted = len(self._decoded)
                return out
        end = len(text) if final else len(text) - self._held_back(text)
        end = max(end, self._emitted)
        out, self._emitted = text[self._emitted : end], end
        return out

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        for n in range(min(self._longest_stop - 1, len(text) - self._emitted), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return n
        return 0
