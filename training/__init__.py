"""The pieces of philora's training loop: config, optimizers, schedules, loss, checkpoints, progress.

``train.py`` is a thin CLI over :func:`training.run.main`; the pieces are importable on their own.
"""

from training.errors import TrainingError
from training.config import TrainConfig, parse_config
from training.loss import chunked_lm_loss, count_targets
from training.schedule import LRSchedule
from training.optim import build_optimizer

__all__ = [
    "TrainingError",
    "TrainConfig",
    "parse_config",
    "chunked_lm_loss",
    "count_targets",
    "LRSchedule",
    "build_optimizer",
]
