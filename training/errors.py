"""The one exception type the training package raises for bad input or a failed run."""

from __future__ import annotations


class TrainingError(ValueError):
    """A run cannot start or continue; the message names the culprit and says what to do."""
