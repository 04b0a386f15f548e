"""attach_adapter: put a saved adapter (our safetensors file or a PEFT directory) onto a loaded model."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import PhiModelError


def attach_adapter(model: nn.Module, path: str | Path, *, lora_dropout: float | None = None) -> dict:
    """Create the adapter's LoRA layers on ``model`` and load its tensors; returns the adapter config.

    ``path`` is a ``lora_core.save_adapter`` file (its metadata says r, alpha and targets) or a PEFT adapter
    directory (``load_peft_adapter``). A file whose shapes do not fit the model fails with one error naming
    each key and both shapes.
    """
    import lora_core

    from .peft_adapter import load_peft_adapter

    path = Path(path)
    if path.is_dir():
        return load_peft_adapter(model, path, lora_dropout=lora_dropout)
    if not path.is_file():
        raise PhiModelError(f"{path}: no such adapter file or PEFT adapter directory")
    tensors, config = lora_core.read_adapter(path)
    if not config.get("targets") and not config.get("modules"):
        raise PhiModelError(f"{path}: the adapter file records no LoRA config (targets, r); it was not written by "
                            f"lora_core.save_adapter; inject LoRA yourself and use lora_core.load_adapter")
    dropout = float(config.get("lora_dropout", 0.0)) if lora_dropout is None else lora_dropout
    common = dict(lora_dropout=dropout, use_rslora=bool(config.get("use_rslora")))
    if config.get("modules"):  # per-module ranks (an imported PEFT adapter saved by philora)
        for spec in config["modules"].values():
            lora_core.inject(model, targets=spec["targets"], r=int(spec["r"]), lora_alpha=spec["lora_alpha"],
                             use_dora=bool(spec.get("use_dora")), **common)
    else:
        lora_core.inject(model, targets=config["targets"], r=int(config["r"]), lora_alpha=config["lora_alpha"],
                         exclude=config.get("exclude"), use_dora=bool(config.get("use_dora")), **common)
    _check_shapes(model, tensors, path)
    lora_core.load_adapter(model, path, strict=True)
    model.lora_core_config = dict(config)
    return dict(config)


def _check_shapes(model: nn.Module, tensors: dict, path: Path) -> None:
    own = model.state_dict()
    mismatched = [f"{key}: adapter {list(value.shape)} vs model {list(own[key].shape)}"
                  for key, value in tensors.items() if key in own and own[key].shape != value.shape]
    if mismatched:
        raise PhiModelError(f"{path}: adapter for another base model; shape mismatch at {mismatched[0]}"
                            + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""))
