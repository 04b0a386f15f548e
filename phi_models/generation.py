"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, min-p, repetition
penalty), stop ids and stop strings, seed, streaming callbacks (ids and decoded text), batched prompts
with left padding.

Token ids are range-checked once, when the prompts come in; the decoding steps feed the model only ids
its own head produced, so they skip the model's per-forward range check (a host synchronisation).

LongRoPE strategy (Phi-3-128k / 3.5 / 4-mini): *recompute*, as transformers does. Cached keys were
rotated with the short factors; at the step where the sequence first passes
``original_max_position_embeddings`` the cache is dropped and the whole sequence so far is run
again with the long factors, after which decoding continues from the new cache. Every step
therefore sees exactly the logits an uncached forward over the full sequence would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from phi_models.errors import PhiModelError
from phi_models.model import PhiForCausalLM
from phi_models.sampling import SamplingParams, check_seed, choose_tokens
from phi_models.streaming import TextStream, check_stop_strings

StreamCallback = Callable[[int, int], None]
TextCallback = Callable[[int, str], None]


def _as_rows(prompts) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist() if prompts.dim() == 2 else [prompts.tolist()]
    elif prompts and isinstance(prompts[0], int):
        prompts = [list(prompts)]
    rows = [list(map(int, p)) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise PhiModelError("generate needs at least one non-empty prompt")
    return rows


def check_prompt_ids(rows: list[list[int]], vocab_size: int) -> None:
    """Refuse token ids outside [0, vocab_size) with one PhiModelError (prompts are host lists: no sync)."""
    for b, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise PhiModelError(
                f"prompt {b} holds token id {bad} outside [0, {vocab_size}); the tokenizer does not match this model"
            )


@torch.no_grad()
def generate(
    model: PhiForCausalLM,
    prompts: Sequence[Sequence[int]] | Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_ids: Sequence[int] = (),
    stop_strings: Iterable[str] | str | None = (),
    tokenizer=None,
    seed: int | None = None,
    pad_id: int = 0,
    stream: StreamCallback | None = None,
    on_text: TextCallback | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (stop token excluded); ``temperature`` 0 means greedy.

    Prompts of different lengths are left-padded with ``pad_id`` and masked. ``stream(row, token)``
    is called for every generated token as soon as it is chosen. With a ``tokenizer``,
    ``on_text(row, text)`` receives decoded increments (see :class:`phi_models.TextStream`), and
    ``stop_strings`` end a row once its decoded text contains one; that row's ids then end with
    the token that completed the stop string, and its text (``on_text``) stops just before it.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise PhiModelError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty)
    seed = check_seed(seed)
    stop_strings = check_stop_strings(stop_strings)
    if (stop_strings or on_text is not None) and tokenizer is None:
        raise PhiModelError("stop_strings and on_text decode text: pass tokenizer= as well")
    rows = _as_rows(prompts)
    check_prompt_ids(rows, model.config.vocab_size)
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
    seen = None
    if repetition_penalty != 1.0:  # (B, V): which tokens each row has seen, prompt included
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, tokens[:, :longest], mask[:, :longest].bool())
    stops = set(int(t) for t in stop_ids)
    texts = [TextStream(tokenizer, stop_strings) for _ in rows] if tokenizer is not None else None
    done = [False] * B
    outputs: list[list[int]] = [[] for _ in rows]
    rotary = model.model.rotary_emb
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(total)
        cache.ids_checked = True
        logits = model(tokens[:, :longest], attention_mask=mask[:, :longest], kv_cache=cache)[:, -1]
        for step in range(max_new_tokens):
            next_token = choose_tokens(logits.float(), [params] * B, [generator] * B, seen)
            chosen = next_token.tolist()  # the one host transfer per step: stops and callbacks need the ids
            for b, token in enumerate(chosen):
                if done[b]:
                    chosen[b] = pad_id
                elif token in stops:
                    done[b], chosen[b] = True, pad_id
                else:
                    _emit(b, token, outputs, stream, on_text, texts)
                    done[b] = texts is not None and texts[b].stopped
            if all(done) or step == max_new_tokens - 1:
                break
            position = longest + step
            live = torch.tensor([not d for d in done], device=device)
            tokens[:, position] = torch.tensor(chosen, device=device)
            mask[:, position] = live.long()
            if seen is not None:
                seen[live, tokens[live, position]] = True
            if cache.rope_long is False and rotary.longrope and position + 1 > rotary.original_max:
                # Crossing into LongRoPE's long regime: rebuild the cache with the long factors.
                cache.reset()
                logits = model(tokens[:, : position + 1], attention_mask=mask[:, : position + 1], kv_cache=cache)
            else:
                step_ids, step_mask = tokens[:, position : position + 1], mask[:, position : position + 1]
                logits = model(step_ids, attention_mask=step_mask, kv_cache=cache)
            logits = logits[:, -1]
    finally:
        model.train(was_training)
    if texts is not None and on_text is not None:
        for b, text in enumerate(texts):
            rest = text.finish()
            if rest:
                on_text(b, rest)
    return outputs


def _emit(b, token, outputs, stream, on_text, texts) -> None:
    outputs[b].append(token)
    if stream is not None:
        stream(b, token)
    if texts is not None:
        piece = texts[b].push(token)
        if piece and on_text is not None:
            on_text(b, piece)
