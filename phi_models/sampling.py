"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, min-p.

``SamplingParams`` validates its values once, where they enter (generate, the server), so the
per-step code never inspects them again. Each row may have its own parameters and its own
seeded generator, so a row samples exactly what it would sample alone in a batch of one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from phi_models.errors import PhiModelError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """How one row picks its tokens; ``temperature`` 0 is greedy (then the filters do not matter).

    ``top_k`` None/0 and ``top_p`` None/1 and ``min_p`` None/0 switch a filter off; ``repetition_penalty``
    1 is off (CTRL's rule: a seen token's positive logit is divided by it, a negative one multiplied).
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        t = self.temperature
        if not _is_number(t) or not math.isfinite(t) or t < 0:
            raise PhiModelError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise PhiModelError(f"top_k must be a whole number >= 0 (0 or None = off), got {k!r}")
        p = self.top_p
        if p is not None and (not _is_number(p) or not (0.0 < p <= 1.0)):
            raise PhiModelError(f"top_p must be a number in (0, 1] (1 or None = off), got {p!r}")
        m = self.min_p
        if m is not None and (not _is_number(m) or not (0.0 <= m <= 1.0)):
            raise PhiModelError(f"min_p must be a number in [0, 1] (0 or None = off), got {m!r}")
        r = self.repetition_penalty
        if not _is_number(r) or not math.isfinite(r) or r <= 0:
            raise PhiModelError(f"repetition_penalty must be a finite number > 0 (1 = off), got {r!r}")

    @property
    def greedy(self) -> bool:
        """True when the row takes the argmax."""
        return self.temperature == 0.0


def check_seed(seed) -> int | None:
    """``seed`` if it is None or a whole number in torch's range, else a PhiModelError."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not (-(2**63) <= seed < 2**64):
        raise PhiModelError(f"seed must be a whole number (or None), got {seed!r}")
    return seed


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Apply per-row repetition penalties (B,) to logits (B, V) at tokens marked in ``seen`` (B, V)."""
    penalty = penalty[:, None].to(logits.dtype)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None, min_p: float | None) -> torch.Tensor:
    """Mask (B, V) temperature-scaled logits outside top-k, the nucleus and the min-p floor to -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = sorted_logits.softmax(-1)
        # Drop a token once the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p is not None and min_p > 0.0:
        probs = logits.softmax(-1)
        floor = probs.max(-1, keepdim=True).values * min_p
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next token (B,) for each row of fp32 logits (B, V), row b following ``params[b]``.

    ``seen`` (B, V) marks each row's tokens so far (needed when a repetition penalty is set).
    Greedy rows share one argmax; each sampled row draws with its own generator.
    """
    penalties = [p.repetition_penalty for p in params]
    if seen is not None and any(r != 1.0 for r in penalties):
        logits = penalize_repeats(logits, seen, torch.tensor(penalties, device=logits.device))
    chosen = logits.argmax(-1)
    for b, p in enumerate(params):
        if p.greedy:
            continue
        row = filter_logits(logits[b : b + 1] / p.temperature, p.top_k, p.top_p, p.min_p)
        chosen[b] = torch.multinomial(row.softmax(-1), 1, generator=generators[b])[0, 0]
    return chosen
