"""The pieces of philora's training loop: config, optimizers, schedules, loss, checkpoints, progress.

``train.py`` is a thin CLI over :func:`training.run.main`; the pieces are importable on their own.
The names below are imported on first use: importing this package must not import torch, because
``train.py`` installs its SIGTERM handler from ``philora.training.signals`` before torch is loaded.
"""

import importlib

_HOMES = {
    "TrainConfig": "config",
    "parse_config": "config",
    "TrainingError": "errors",
    "Trainer": "loop",
    "FitResult": "loop",
    "accumulate_window": "loop",
    "evaluate": "loop",
    "optimizer_step": "loop",
    "chunked_lm_loss": "loss",
    "count_targets": "loss",
    "build_optimizer": "optim",
    "Precision": "precision",
    "LRSchedule": "schedule",
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    """``philora.training.<name>`` for the names in ``__all__``, imported from their module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
