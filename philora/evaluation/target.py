"""RUN_OR_MODEL (+ ``--adapter``) as a loaded model, its tokenizer and the settings training used.

Loading goes through :func:`philora.runs.load_for_inference`. A run directory's ``train_config.yaml``
also gives the data preparation (template, sequence length, split seed and fraction), evaluation
batching and the precision training ran in, so ``philora eval`` rebuilds the validation split and its
batches exactly as training did. A plain model gets TrainConfig's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lora_core.linear4bit import keep_standard_4bit_layout
from philora.evaluation.errors import EvalError
from philora.training.config import FIELDS, TrainConfig, coerce
from philora.training.precision import Precision, base_dtype, resolve_device, resolve_precision


@dataclass
class EvalTarget:
    """A model ready to evaluate, with what is needed to prepare its data the way training did."""

    model: torch.nn.Module
    tokenizer: object
    settings: TrainConfig  # the run's options (or defaults for a plain model), --data applied
    precision: Precision
    run_dir: Path | None  # None for a plain model
    adapter: str | None  # the adapter loaded on top of the base, if any


def run_settings(config: dict, source: str) -> TrainConfig:
    """The TrainConfig of a run from its train_config.yaml mapping (the ``resolved:`` section is not an option)."""
    values = {name: coerce(name, value, source=source) for name, value in config.items() if name in FIELDS}
    return TrainConfig(**values)


def load_target(
    target: str,
    *,
    adapter: str | None = None,
    data: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> EvalTarget:
    """Load RUN_OR_MODEL as ``philora eval`` sees it; ``device``/``precision`` None keep the run's."""
    from philora.runs import CONFIG_FILE, is_run_dir, load_for_inference, open_run

    run = open_run(target) if is_run_dir(target) else None
    if run is not None:
        settings = run_settings(run.config, str(run.path / CONFIG_FILE))
        trained_in = run.resolved.get("precision")  # what "auto" resolved to when training ran
    else:
        path = Path(target)
        if path.is_dir() and not (path / "config.json").is_file():
            raise EvalError(
                f"{target}: neither a run directory (no {CONFIG_FILE}) nor a model directory (no config.json)"
            )
        settings, trained_in = TrainConfig(model=target), None
    if data:
        settings = replace(settings, data=data)
    resolved_device = resolve_device(device or settings.device)
    wanted = precision or (trained_in if trained_in and device is None else settings.precision)
    mode = Precision(resolve_precision(wanted, resolved_device), resolved_device)
    # a run's base loads in the dtype it trained with (unless another precision is asked for); a plain
    # model in the compute dtype, as training would store it
    keep_run_dtype = run is not None and run.dtype and precision is None
    dtype = None if keep_run_dtype else base_dtype(settings.dtype, mode)
    loaded = load_for_inference(target, adapter=adapter, dtype=dtype, device=str(resolved_device))
    if run is not None and run.quantize is not None:
        keep_standard_4bit_layout(loaded.model)  # the same 4-bit kernels as training's own evaluation
    used = adapter or (str(run.adapter_file) if run is not None else None)
    return EvalTarget(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        settings=settings,
        precision=mode,
        run_dir=run.path if run is not None else None,
        adapter=str(used) if used else None,
    )
