"""``philora eval``'s computation: loss and perplexity on a split, then generation metrics on the same examples.

The loss is the training loop's own :func:`training.loop.evaluate` over batches built by training's
:func:`training.run.validation_batches`, so on a run's validation split the perplexity is exactly
``exp`` of the eval loss training logged. The generation metrics come from :mod:`training.gen_eval`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from philora.evaluation.errors import EvalError
from philora.evaluation.target import EvalTarget
from philora.training.gen_eval import evaluate_generation, generation_cases
from philora.training.loop import evaluate
from philora.training.run import validation_batches

SPLITS = ("val", "test", "train")
SAMPLE_FIELDS = ("reply", "stopped", "tokens", "exact_match", "rouge1", "rouge2", "rougeL")
# (label, metrics key, format) of each metric as the table and the HTML page show it
METRIC_ROWS = (
    ("loss", "loss", "{:.4f}"),
    ("perplexity", "ppl", "{:.2f}"),
    ("ROUGE-1", "rouge1", "{:.4f}"),
    ("ROUGE-2", "rouge2", "{:.4f}"),
    ("ROUGE-L", "rougeL", "{:.4f}"),
    ("exact match", "exact_match", "{:.3f}"),
    ("reply tokens (mean)", "reply_tokens", "{:.1f}"),
    ("stop share", "stop_share", "{:.3f}"),
)


@dataclass
class EvalResults:
    """What one ``philora eval`` measured: settings, metrics per variant, one merged record per example."""

    info: dict
    variants: dict[str, dict] = field(default_factory=dict)  # "adapter"/"base" -> metrics
    samples: list[dict] = field(default_factory=list)


def split_examples(target: EvalTarget, split: str, *, for_generation: bool = False) -> list:
    """The examples of ``split`` prepared as training prepared them.

    ``test`` is every example of ``--data`` (nothing held out). With ``for_generation`` a run trained
    with --train-on-prompt is prepared without it, so that each example's prompt is masked again.
    """
    from philora import data

    if split not in SPLITS:
        raise EvalError(f"--split {split}: use one of {', '.join(SPLITS)}")
    s = target.settings
    if not s.data:
        raise EvalError(f"{s.model} is a model, not a run: say what to evaluate on with --data SOURCE")
    prepared = data.prepare(
        s.data,
        target.tokenizer,
        template=s.template,
        max_seq_len=s.max_seq_len,
        train_on_prompt=s.train_on_prompt and not for_generation,
        val_fraction=0.0 if split == "test" else s.val_fraction,
        seed=s.seed,
        limit=None if split == "test" else s.limit,
    )
    if split == "test":
        return prepared.train + prepared.val
    examples = prepared.val if split == "val" else prepared.train
    if not examples:
        raise EvalError(
            f"--data {s.data}: the {split} split is empty (val fraction {s.val_fraction}); "
            f"use --split train, or --data FILE --split test"
        )
    return examples


def _variant_metrics(
    target: EvalTarget, examples: list, cases: list, *, max_new_tokens: int, batch_size: int
) -> tuple[dict, list[dict]]:
    tokenizer, s = target.tokenizer, target.settings
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss = evaluate(
        target.model, validation_batches(s, examples, pad_id), precision=target.precision, chunk=s.loss_chunk
    )
    generated = evaluate_generation(
        target.model, tokenizer, cases, max_new_tokens=max_new_tokens, batch_size=batch_size, precision=target.precision
    )
    return {
        "loss": loss["loss"],
        "ppl": loss["ppl"],
        "target_tokens": loss["tokens"],
        **generated.metrics,
    }, generated.samples


def run_eval(
    target: EvalTarget,
    *,
    split: str = "val",
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int | None = None,
    compare_base: bool = False,
) -> EvalResults:
    """Loss, perplexity and generation metrics of ``target`` on ``split`` (and of its base with ``compare_base``)."""
    import lora_core

    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be >= 1, got {limit}")
    if compare_base and target.adapter is None:
        raise EvalError("--compare-base needs an adapter: evaluate a run directory or pass --adapter FILE")
    examples = split_examples(target, split)[:limit]
    prompt_source = (
        split_examples(target, split, for_generation=True)[:limit] if target.settings.train_on_prompt else examples
    )
    cases = generation_cases(prompt_source, target.tokenizer.stop_token_ids)
    if not cases:
        raise EvalError(f"--data {target.settings.data}: no example of the {split} split has a reply to generate")
    batch_size = batch_size or target.settings.eval_batch_size
    s = target.settings
    info = {
        "target": str(target.run_dir or s.model),
        "base_model": s.model,
        "adapter": target.adapter,
        "data": s.data,
        "split": split,
        "examples": len(examples),
        "generated": len(cases),
        "max_new_tokens": max_new_tokens,
        "precision": target.precision.name,
        "device": str(target.precision.device),
        "template": s.template,
        "max_seq_len": s.max_seq_len,
    }
    results = EvalResults(info=info)
    variants = [("adapter" if target.adapter else "base", None)]
    if compare_base:
        variants.append(("base", lora_core.disable_adapters))
    per_variant = {}
    for name, context in variants:
        if context is None:
            metrics, samples = _variant_metrics(
                target, examples, cases, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
        else:
            with context(target.model):
                metrics, samples = _variant_metrics(
                    target, examples, cases, max_new_tokens=max_new_tokens, batch_size=batch_size
                )
        results.variants[name] = metrics
        per_variant[name] = samples
    first = next(iter(per_variant.values()))
    for index, shared in enumerate(first):
        record = {"index": index, "prompt": shared["prompt"], "reference": shared["reference"]}
        for name, samples in per_variant.items():
            record.update({f"{name}_{key}": samples[index][key] for key in SAMPLE_FIELDS if key in samples[index]})
        results.samples.append(record)
    return results
