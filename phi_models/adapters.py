"""attach_adapter: put a saved adapter (our safetensors file or a PEFT directory) onto a loaded model."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from phi_models.errors import PhiModelError


def attach_adapter(model: nn.Module, path: str | Path, *, lora_dropout: float | None = None) -> dict:
    """Create the adapter's LoRA layers on ``model`` and load its tensors; returns the adapter config.

    ``path`` is a ``lora_core.save_adapter`` file (its metadata says r, alpha and targets) or a PEFT adapter
    directory (``load_peft_adapter``). A file whose shapes do not fit the model fails with one error naming
    each key and both shapes. ``lora_dropout`` overrides a PEFT config's dropout (a philora file keeps the
    dropout it records). Only the LoRA parameters stay trainable.
    """
    import lora_core
    from phi_models.peft_adapter import load_peft_adapter

    path = Path(path)
    if path.is_dir():
        return load_peft_adapter(model, path, lora_dropout=lora_dropout)
    if not path.is_file():
        raise PhiModelError(f"{path}: no such adapter file or PEFT adapter directory")
    _, config = lora_core.read_adapter(path)
    if not config.get("adapted"):
        raise PhiModelError(
            f"{path}: the adapter file records no LoRA config (its adapted layers, r); it was not "
            f"written by lora_core.save_adapter; inject LoRA yourself and use lora_core.load_adapter"
        )
    # the file's config names its layers, ranks and patterns: lora_core creates them, then loads (shapes checked)
    lora_core.load_adapter(model, path, strict=True, adapter_name=lora_core.DEFAULT_ADAPTER)
    lora_core.mark_only_lora_as_trainable(model)
    return dict(model.lora_core_config)
