"""``philora train ...``: exactly ``python train.py ...`` (every option lives in training.config.TrainConfig)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Run training with ``argv`` as train.py would; returns the exit code."""
    from philora.training.run import main as train_main

    return train_main(argv)
