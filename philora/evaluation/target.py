"""RUN_OR_MODEL (+ ``--adapter``) as a loaded model, its tokenizer and the settings training used.

A run directory's ``train_config.yaml`` gives the base model, data preparation (template, sequence length,
split seed and fraction), evaluation batching, precision and dtype, so ``philora eval`` rebuilds the
validation split and its batches exactly as training did. A plain model gets TrainConfig's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from philora.evaluation.errors import EvalError
from training.config import FIELDS, TrainConfig, coerce
from training.precision import Precision, base_dtype, resolve_device, resolve_precision

CONFIG_FILE = "train_config.yaml"
FINAL_ADAPTER = "adapter.safetensors"


@dataclass
class EvalTarget:
    """A model ready to evaluate, with what is needed to prepare its data the way training did."""

    model: torch.nn.Module
    tokenizer: object
    settings: TrainConfig  # the run's options (or defaults for a plain model), --data applied
    precision: Precision
    run_dir: Path | None  # None for a plain model
    adapter: str | None  # the adapter loaded on top of the base, if any


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a train_config.yaml."""
    return (Path(path) / CONFIG_FILE).is_file()


def run_settings(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was trained with, read from its train_config.yaml (unknown keys ignored)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise EvalError(f"{path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw.get("model"):
        raise EvalError(f"{path}: not a philora train_config.yaml (no 'model' key)")
    # coerce raises TrainingError naming the key; later sections (e.g. a 'resolved:' block) are not options
    values = {name: coerce(name, value, source=str(path)) for name, value in raw.items() if name in FIELDS}
    return TrainConfig(**values)


def _run_adapter(run_dir: Path) -> Path:
    adapter = run_dir / FINAL_ADAPTER
    if not adapter.is_file():
        raise EvalError(f"{run_dir}: the run has no {FINAL_ADAPTER} (not finished?); finish it with "
                        f"`philora train --resume latest --output-dir {run_dir}` or pass --adapter FILE")
    return adapter


def load_model(base: str, *, adapter: str | Path | None, dtype: torch.dtype, device: torch.device,
               quantize: str | None, tokenizer: str | None = None):
    """(model in eval mode, tokenizer): ``base`` with our adapter file on top (the run-loading helper)."""
    import lora_core
    import phi_models

    model = phi_models.from_pretrained(base, dtype=dtype, device=device, quantize=quantize)
    if quantize is not None:
        from training.run import keep_4bit_weights_trainable
        keep_4bit_weights_trainable(model)  # the same 4-bit kernels as training's own evaluation
    if adapter is not None:
        adapter = Path(adapter)
        if adapter.is_dir():
            raise EvalError(f"--adapter {adapter}: a directory; pass an adapter.safetensors file")
        _, config = lora_core.read_adapter(adapter)
        if not config.get("targets"):
            raise EvalError(f"--adapter {adapter}: the file records no LoRA config (targets, r); "
                            f"pass an adapter written by philora")
        lora_core.inject(model, targets=config["targets"], exclude=config.get("exclude"), r=int(config["r"]),
                         lora_alpha=config["lora_alpha"], lora_dropout=config.get("lora_dropout", 0.0),
                         use_rslora=bool(config.get("use_rslora")), use_dora=bool(config.get("use_dora")))
        lora_core.load_adapter(model, adapter, strict=True)
    return model.eval(), phi_models.load_tokenizer(tokenizer or base)


def load_target(target: str, *, adapter: str | None = None, data: str | None = None, device: str | None = None,
                precision: str | None = None) -> EvalTarget:
    """Load RUN_OR_MODEL as ``philora eval`` sees it; ``device``/``precision`` None keep the run's."""
    run_dir = Path(target) if is_run_dir(target) else None
    if run_dir is not None:
        settings = run_settings(run_dir)
        adapter = adapter or str(_run_adapter(run_dir))
    else:
        if Path(target).is_file():
            raise EvalError(f"{target}: a file, not a run directory or model; pass an adapter file with --adapter")
        if Path(target).is_dir() and not (Path(target) / "config.json").is_file():
            raise EvalError(f"{target}: neither a run directory (no {CONFIG_FILE}) nor a model directory (no config.json)")
        settings = TrainConfig(model=target)
    if data:
        settings = replace(settings, data=data)
    resolved_device = resolve_device(device or settings.device)
    mode = Precision(resolve_precision(precision or settings.precision, resolved_device), resolved_device)
    quantize = None if settings.quantize == "none" else settings.quantize
    model, tokenizer = load_model(settings.model, adapter=adapter, dtype=base_dtype(settings.dtype, mode),
                                  device=resolved_device, quantize=quantize, tokenizer=settings.tokenizer)
    return EvalTarget(model=model, tokenizer=tokenizer, settings=settings, precision=mode, run_dir=run_dir,
                      adapter=str(adapter) if adapter else None)
