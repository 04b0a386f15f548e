"""The one exception type the data package raises for bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input (file, record, field, option); the message names where and says what to do."""
