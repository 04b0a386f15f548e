"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p), stop ids, seed,
streaming callback, batched prompts with left padding.

LongRoPE strategy (Phi-3-128k / 3.5 / 4-mini): *recompute*, as transformers does. Cached keys were
rotated with the short factors; at the step where the sequence first passes
``original_max_position_embeddings`` the cache is dropped and the whole sequence so far is run
again with the long factors, after which decoding continues from the new cache. Every step
therefore sees exactly the logits an uncached forward over the full sequence would give.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import PhiModelError
from .model import PhiForCausalLM

StreamCallback = Callable[[int, int], None]


def _as_rows(prompts) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist() if prompts.dim() == 2 else [prompts.tolist()]
    elif prompts and isinstance(prompts[0], int):
        prompts = [list(prompts)]
    rows = [list(map(int, p)) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise PhiModelError("generate needs at least one non-empty prompt")
    return rows


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask (B, V) logits outside the top-k / nucleus to -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: PhiForCausalLM,
    prompts: Sequence[Sequence[int]] | Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Sequence[int] = (),
    seed: int | None = None,
    pad_id: int = 0,
    stream: StreamCallback | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (stop token excluded); ``temperature`` 0 means greedy.

    Prompts of different lengths are left-padded with ``pad_id`` and masked. ``stream(row, token)``
    is called for every generated token as soon as it is chosen.
    """
    if max_new_tokens < 0 or temperature < 0:
        raise PhiModelError("max_new_tokens and temperature must be >= 0")
    rows = _as_rows(prompts)
    device = next(model.parameters()).device
    B, longest = len(rows), max(len(r) for r in rows)
    total = longest + max_new_tokens
    if total > model.config.max_position_embeddings:
        raise PhiModelError(
            f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_position_embeddings {model.config.max_position_embeddings}"
        )
    tokens = torch.full((B, total), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, total), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        tokens[b, longest - len(row) : longest] = torch.tensor(row, device=device)
        mask[b, longest - len(row) : longest] = 1
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    outputs: list[list[int]] = [[] for _ in rows]
    rotary = model.model.rotary_emb
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(total)
        logits = model(tokens[:, :longest], attention_mask=mask[:, :longest], kv_cache=cache)[:, -1]
        for step in range(max_new_tokens):
            next_token = _choose(logits.float(), temperature, top_k, top_p, generator)
            next_token = torch.where(done, torch.full_like(next_token, pad_id), next_token)
            position = longest + step
            tokens[:, position] = next_token
            mask[:, position] = (~done).long()
            is_stop = torch.isin(next_token, stops) if len(stops) else torch.zeros_like(done)
            for b in (~done & ~is_stop).nonzero().flatten().tolist():
                token = int(next_token[b])
                outputs[b].append(token)
                if stream is not None:
                    stream(b, token)
            done |= is_stop
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            next_positions = cache.next_positions
            if cache.rope_long is False and rotary.needs_long(next_positions):
                # Crossing into LongRoPE's long regime: rebuild the cache with the long factors.
                cache.reset()
                logits = model(tokens[:, : position + 1], attention_mask=mask[:, : position + 1], kv_cache=cache)
            else:
                logits = model(tokens[:, position : position + 1], attention_mask=mask[:, position : position + 1], kv_cache=cache)
            logits = logits[:, -1]
    finally:
        model.train(was_training)
    return outputs


def _choose(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator
) -> torch.Tensor:
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = _filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
