"""Learning-rate schedules with linear warmup: cosine, linear and constant.

The learning rate is a pure function of the optimizer step, so resuming needs nothing but the
step count; the state dict still records it to catch a schedule changed between runs.
"""

from __future__ import annotations

import math

import torch

from philora.training.errors import TrainingError


def warmup_steps_for(warmup: float, total_steps: int) -> int:
    """Warmup given as steps (>= 1) or as a fraction of ``total_steps`` (< 1) -> a step count."""
    if warmup >= 1:
        return int(warmup)
    return int(math.ceil(warmup * total_steps))


class LRSchedule:
    """Sets ``optimizer``'s learning rate for each step: warmup to ``peak_lr``, then decay.

    ``step()`` is called after each optimizer step (as with torch schedulers); ``lr_at(n)`` is the
    rate used for the optimizer step numbered ``n`` (0-based).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        peak_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ):
        if kind not in ("cosine", "linear", "constant"):
            raise TrainingError(f"--schedule: unknown schedule {kind!r}; choose cosine, linear or constant")
        self.optimizer = optimizer
        self.kind = kind
        self.peak_lr = peak_lr
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_lr_ratio = min_lr_ratio
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return self.peak_lr
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.peak_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * factor)

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """Advance to the next optimizer step and set its learning rate."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> float:
        """The learning rate the next optimizer step will use."""
        return self.lr_at(self.last_step)

    def extend_to(self, total_steps: int) -> str | None:
        """Stretch the decay to end at ``total_steps`` when a resumed run is given more steps; returns a note.

        The learning rate stays a pure function of the step: from now on it follows the same curve
        (same warmup, same peak and floor) drawn over the longer run, so the next step's rate is the
        stretched curve's value there, never the floor the old schedule had reached. A smaller total
        leaves the schedule alone (the run just stops earlier).
        """
        if total_steps <= self.total_steps:
            return None
        before = self.get_last_lr()
        old, self.total_steps = self.total_steps, int(total_steps)
        self._apply()
        return (
            f"schedule extended from {old} to {self.total_steps} steps ({self.kind} stretched over the new "
            f"length): lr at step {self.last_step} is {self.get_last_lr():.3g} (was {before:.3g})"
        )

    def state_dict(self) -> dict:
        """Everything needed to continue the schedule."""
        return {
            "kind": self.kind,
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; the schedule's shape comes from the checkpoint, not the new flags."""
        self.kind = state["kind"]
        self.peak_lr = float(state["peak_lr"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.min_lr_ratio = float(state["min_lr_ratio"])
        self.last_step = int(state["last_step"])
        self._apply()
