"""Scores of generated text against references: ROUGE-1/2/L (rouge-score, optional) and exact match.

ROUGE is computed by Google's ``rouge-score`` package (the ``eval`` extra), the implementation behind
``evaluate.load("rouge")``, without any hub access. Each pair gets its F-measure; a set of pairs gets the
plain mean of them. Without the package the ROUGE keys are absent and :data:`ROUGE_HINT` says how to add it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_HINT = "ROUGE needs the rouge-score package: pip install 'philora[eval]'"


def rouge_per_pair(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]] | None:
    """F-measure of each ROUGE type for each (prediction, reference) pair; None without rouge-score.

    rouge-score's default tokenizer lowercases and keeps ASCII letters and digits only (no stemming,
    as ``evaluate``'s default), so text in other scripts scores 0.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions vs {len(references)} references")
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    out = []
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge-score's order: (target, prediction)
        out.append({name: float(scores[name].fmeasure) for name in ROUGE_TYPES})
    return out


def mean_rouge(per_pair: list[dict[str, float]]) -> dict[str, float]:
    """The mean F-measure of each ROUGE type over pairs (0.0 for no pairs)."""
    return {name: sum(p[name] for p in per_pair) / len(per_pair) if per_pair else 0.0 for name in ROUGE_TYPES}


def normalize_answer(text: str) -> str:
    """Whitespace-normalized text for exact match: runs of whitespace become one space, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def exact_match(prediction: str, reference: str) -> bool:
    """True when prediction and reference are equal after :func:`normalize_answer` (case kept)."""
    return normalize_answer(prediction) == normalize_answer(reference)
