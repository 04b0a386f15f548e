"""Argument checks for the data API: a wrong type is a DataError saying what to pass, not a TypeError
from deep inside."""

from __future__ import annotations

import numbers

from philora.data.errors import DataError


def require_int(name: str, value, low: int) -> None:
    """``value`` must be an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be an integer, got {type(value).__name__} {value!r:.40}")
    if value < low:
        raise DataError(f"{name} must be at least {low}, got {value}")


def require_fraction(name: str, value) -> None:
    """``value`` must be a real number (the range is checked where it is used)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name} must be a number, got {type(value).__name__} {value!r:.40}")


def require_tokenizer(tokenizer) -> None:
    """A phi_models.PhiTokenizer (or anything with the same attributes)."""
    missing = [a for a in ("backend", "eos_token_id", "chat_format") if not hasattr(tokenizer, a)]
    if missing:
        raise DataError(
            f"tokenizer must be a phi_models.PhiTokenizer (phi_models.load_tokenizer(...)) or a model "
            f"name, got {type(tokenizer).__name__} without {', '.join(missing)}"
        )


def require_examples(examples) -> None:
    """A sequence of data.Example, as data.prepare returns them."""
    if not isinstance(examples, (list, tuple)) or not all(hasattr(e, "input_ids") for e in examples):
        raise DataError(
            f"examples must be a list of data.Example (prepared.train / prepared.val), got {type(examples).__name__}"
        )
