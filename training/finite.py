"""Non-finite LoRA weights stop the run: they are never checkpointed, never saved as the adapter."""

from __future__ import annotations

import torch

from philora.training.errors import TrainingError


def first_non_finite(model: torch.nn.Module) -> str | None:
    """Name of the first trainable parameter holding NaN or inf (None when all are finite)."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        return None
    # One reduction per parameter and one host sync; the name is searched only when something is wrong.
    if bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
        return None
    return next(name for name, p in params if not bool(torch.isfinite(p).all()))


def check_finite_lora(model: torch.nn.Module, source: str) -> None:
    """Refuse LoRA weights loaded from ``source`` when any of them is NaN or infinite."""
    name = first_non_finite(model)
    if name is not None:
        raise TrainingError(
            f"{source}: LoRA parameter {name} holds NaN or infinite values; "
            f"resume from an earlier checkpoint or start afresh"
        )


def stop_if_weights_non_finite(model: torch.nn.Module, step: int, last_checkpoint: str | None) -> None:
    """After the update of ``step``: raise (so nothing is saved) when it made a LoRA parameter NaN or inf."""
    name = first_non_finite(model)
    if name is None:
        return
    where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint had been saved yet"
    raise TrainingError(
        f"the update of step {step} made LoRA parameter {name} NaN or infinite; stopped before "
        f"saving it ({where}); try a lower --lr or a larger --adam-eps"
    )
