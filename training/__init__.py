"""The pieces of philora's training loop: config, optimizers, schedules, loss, checkpoints, progress.

``train.py`` is a thin CLI over :func:`training.run.main`; the pieces are importable on their own.
"""

from philora.training.config import TrainConfig, parse_config
from philora.training.errors import TrainingError
from philora.training.loop import accumulate_window, evaluate, fit, optimizer_step
from philora.training.loss import chunked_lm_loss, count_targets
from philora.training.optim import build_optimizer
from philora.training.precision import Precision
from philora.training.schedule import LRSchedule

__all__ = [
    "TrainingError",
    "TrainConfig",
    "parse_config",
    "chunked_lm_loss",
    "count_targets",
    "accumulate_window",
    "optimizer_step",
    "evaluate",
    "fit",
    "build_optimizer",
    "Precision",
    "LRSchedule",
]
