"""The one exception type phi_models raises for bad input."""

from __future__ import annotations


class PhiModelError(ValueError):
    """Bad input to phi_models (config, checkpoint, name, arguments); the message says what to do."""
