"""The errors ``philora eval`` / ``report`` / the lm-eval model report to users as one line."""

from __future__ import annotations

from lora_core import LoRAError
from phi_models import HubError, PhiModelError
from philora.data import DataError
from philora.runs import RunError
from philora.training.errors import TrainingError


class EvalError(ValueError):
    """A target, option or file that cannot be evaluated; ``str(err)`` says what to do."""


# Every package's error class carries a message written for the user: the commands print it, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    EvalError,
    RunError,
    TrainingError,
    LoRAError,
    PhiModelError,
    HubError,
    DataError,
)
