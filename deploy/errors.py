"""The deploy package's error class."""

from __future__ import annotations


class DeployError(Exception):
    """A run or adapter that cannot be exported to the chosen target; the message says why and what to do."""
