"""Generation-based evaluation: generate from each example's prompt and compare with its reference reply.

Teacher-forced loss flatters (it never lets the model run on its own output) and cannot show a model
that never learns to stop. Here every example is split at its last reply: the prompt is everything
before that reply's first target token, the reference is the reply itself. The model generates from
the prompt (greedy, up to ``max_new_tokens``), and the replies are scored: ROUGE-1/2/L, exact match,
mean generated length and the *stop share*, the fraction of generations that ended with a stop token
rather than running into ``max_new_tokens``.

Used by ``philora eval`` and, through :func:`training_generation_eval`, by ``--eval-generate N``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from philora.data import IGNORE_INDEX
from philora.training.errors import TrainingError
from philora.training.gen_metrics import exact_match, mean_rouge, rouge_per_pair
from philora.training.precision import Precision


@dataclass
class GenerationCase:
    """One example as a generation task: the prompt tokens and the reference reply's tokens."""

    prompt_ids: list[int]
    reference_ids: list[int]


@dataclass
class Reply:
    """A generated reply: its tokens (stop token excluded) and whether a stop token ended it."""

    ids: list[int]
    stopped: bool


@dataclass
class GenerationResult:
    """Aggregate metrics and one record per example (texts, flags, per-example scores)."""

    metrics: dict
    samples: list[dict]


def _target_runs(targets: Sequence[int]) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of positions that carry a target."""
    runs, start = [], None
    for t, target in enumerate(targets):
        if target != IGNORE_INDEX and start is None:
            start = t
        elif target == IGNORE_INDEX and start is not None:
            runs.append((start, t))
            start = None
    if start is not None:
        runs.append((start, len(targets)))
    return runs


def case_from_example(example, stop_ids: Sequence[int]) -> GenerationCase | None:
    """Split ``example`` (a data.Example) at its last reply; None when it has no reply text.

    A run of targets made only of stop tokens (the EOS data appends after a chat turn's end marker) is
    not a reply of its own, so the last run holding any other token is the one generated.
    """
    stops = set(stop_ids)
    for start, stop in reversed(_target_runs(example.targets)):
        reference = [int(t) for t in example.targets[start:stop]]
        if any(t not in stops for t in reference):
            # targets are shifted: position `start` predicts the reply's first token, so it ends the prompt
            return GenerationCase(prompt_ids=[int(t) for t in example.input_ids[: start + 1]], reference_ids=reference)
    return None


def generation_cases(examples, stop_ids: Sequence[int], limit: int | None = None) -> list[GenerationCase]:
    """The generation cases of the first ``limit`` examples that have a reply (all when ``limit`` is None)."""
    cases = []
    for example in examples:
        if limit is not None and len(cases) >= limit:
            break
        case = case_from_example(example, stop_ids)
        if case is not None:
            cases.append(case)
    return cases


def generate_replies(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int,
    precision: Precision,
    **sampling,
) -> list[Reply]:
    """Replies to ``prompts``, ``batch_size`` at a time (similar lengths batched together).

    Greedy unless ``sampling`` passes phi_models.generate's temperature/top_k/top_p/seed. A prompt too
    long for the model's context with ``max_new_tokens`` more is cut from the left.
    """
    import phi_models

    if max_new_tokens < 1:
        raise TrainingError(f"max new tokens must be >= 1, got {max_new_tokens}")
    context = model.config.max_position_embeddings
    if max_new_tokens >= context:
        raise TrainingError(
            f"max new tokens {max_new_tokens} leaves no room for a prompt in the model's context of {context} positions"
        )
    keep = context - max_new_tokens
    prompts = [p[-keep:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[Reply | None] = [None] * len(prompts)
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        with precision.autocast():
            outputs = phi_models.generate(
                model,
                [prompts[i] for i in rows],
                max_new_tokens=max_new_tokens,
                stop_ids=list(stop_ids),
                pad_id=pad_id,
                **sampling,
            )
        for i, ids in zip(rows, outputs):
            # generate drops the stop token, so a reply shorter than the budget is one that stopped
            replies[i] = Reply(ids=list(ids), stopped=len(ids) < max_new_tokens)
    return replies  # type: ignore[return-value]


def score_replies(cases: list[GenerationCase], replies: list[Reply], tokenizer) -> GenerationResult:
    """Metrics of ``replies`` against the cases' references, plus one sample record per case."""
    predictions = [tokenizer.decode(r.ids, skip_special_tokens=True) for r in replies]
    references = [tokenizer.decode(c.reference_ids, skip_special_tokens=True) for c in cases]
    rouge = rouge_per_pair([p.strip() for p in predictions], [r.strip() for r in references])
    samples = []
    for i, (case, reply) in enumerate(zip(cases, replies)):
        sample = {
            "prompt": tokenizer.decode(case.prompt_ids, skip_special_tokens=False),
            "reference": references[i],
            "reply": predictions[i],
            "stopped": reply.stopped,
            "tokens": len(reply.ids),
            "exact_match": exact_match(predictions[i], references[i]),
        }
        if rouge is not None:
            sample.update(rouge[i])
        samples.append(sample)
    n = len(cases)
    metrics = {
        "examples": n,
        "exact_match": sum(s["exact_match"] for s in samples) / n if n else 0.0,
        "reply_tokens": sum(s["tokens"] for s in samples) / n if n else 0.0,
        "stop_share": sum(s["stopped"] for s in samples) / n if n else 0.0,
    }
    if rouge is not None:
        metrics.update(mean_rouge(rouge))
    return GenerationResult(metrics=metrics, samples=samples)


def evaluate_generation(
    model, tokenizer, cases: list[GenerationCase], *, max_new_tokens: int, batch_size: int, precision: Precision
) -> GenerationResult:
    """Generate a reply for every case and score them (see the module docstring)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies = generate_replies(
        model,
        [c.prompt_ids for c in cases],
        max_new_tokens=max_new_tokens,
        stop_ids=tokenizer.stop_token_ids,
        pad_id=pad_id,
        batch_size=batch_size,
        precision=precision,
    )
    return score_replies(cases, replies, tokenizer)


def training_generation_eval(
    tokenizer, val_examples, *, count: int, max_new_tokens: int, batch_size: int, precision: Precision
) -> Callable[[torch.nn.Module], dict]:
    """What ``--eval-generate N`` runs at each evaluation: ``model -> {"gen_rouge1": ..., "gen_stop_share": ...}``."""
    cases = generation_cases(val_examples, tokenizer.stop_token_ids, limit=count)

    def run(model: torch.nn.Module) -> dict:
        if not cases:
            return {}
        result = evaluate_generation(
            model, tokenizer, cases, max_new_tokens=max_new_tokens, batch_size=batch_size, precision=precision
        )
        return {f"gen_{key}": value for key, value in result.metrics.items()}

    return run
