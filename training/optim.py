"""Optimizer construction: torch AdamW (fused where the device supports it) or bitsandbytes 8-bit/paged AdamW."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from philora.training.errors import TrainingError

_BNB_CLASSES = {"adamw8bit": "AdamW8bit", "paged_adamw": "PagedAdamW", "paged_adamw8bit": "PagedAdamW8bit"}


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    *,
    name: str = "adamw",
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Return the optimizer ``name`` over the trainable ``params``.

    ``adamw`` is torch's AdamW, fused when every parameter is a floating tensor on CPU or CUDA
    (one kernel per step instead of a Python loop over tensors). The bitsandbytes optimizers keep
    8-bit moments (``adamw8bit``, ``paged_adamw8bit``) and/or page their state to host memory
    under GPU pressure (``paged_*``; on CPU bitsandbytes falls back to unpaged behaviour).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise TrainingError("no trainable parameters: check --targets (it matched no module of the model)")
    if name == "adamw":
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
    if name in _BNB_CLASSES:
        try:
            import bitsandbytes.optim as bnb_optim
        except ImportError as err:
            raise TrainingError(f"--optimizer {name} needs bitsandbytes: pip install bitsandbytes ({err})") from None
        cls = getattr(bnb_optim, _BNB_CLASSES[name])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
            return cls(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise TrainingError(f"--optimizer: unknown optimizer {name!r}; choose adamw, {', '.join(_BNB_CLASSES)}")
