"""Adapter files: lora_state_dict in one safetensors file, the LoRA config as JSON metadata."""
import json
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .atomic import PathLike, atomic_write
from .errors import LoRAError
from .utils import lora_state_dict

CONFIG_KEY = "lora_config"


def save_adapter(model: nn.Module, path: PathLike, config: Optional[Dict[str, Any]] = None,
                 bias: str = "none") -> Dict[str, torch.Tensor]:
    """Write `lora_state_dict(model, bias)` to a safetensors file at `path`, atomically, with
    `config` (default: the config `inject` recorded on the model) as JSON metadata.
    Returns the tensors written."""
    from safetensors.torch import save_file
    # Own copies: safetensors refuses tensors that share storage (e.g. tied biases with bias="all").
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in lora_state_dict(model, bias).items()}
    if not tensors:
        raise LoRAError(f"{type(model).__name__} has no LoRA parameters to save to {os.fspath(path)}; "
                        f"add LoRA first (lora_core.inject or lora_core layers)")
    if config is None:
        config = getattr(model, "lora_core_config", None) or {}
    try:
        metadata = {"format": "pt", CONFIG_KEY: json.dumps(config, sort_keys=True)}
    except TypeError as err:
        raise LoRAError(f"adapter config for {os.fspath(path)} is not JSON-serializable: {err}") from None
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return tensors


def read_adapter(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(tensors, config) from an adapter file. safetensors files carry their config; a loralib
    torch checkpoint (.pt/.pth/.bin) is read with weights_only=True and has an empty config."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LoRAError(f"adapter file {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise LoRAError(f"adapter file {path} is not a readable safetensors file: {err}") from None
        try:
            config = json.loads(metadata.get(CONFIG_KEY, "{}"))
        except json.JSONDecodeError as err:
            raise LoRAError(f"adapter file {path}: metadata {CONFIG_KEY!r} is not valid JSON: {err}") from None
        return tensors, config
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise LoRAError(f"adapter file {path} is neither safetensors nor a weights-only torch file: {err}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise LoRAError(f"adapter file {path} does not hold a dict of tensors")
    return tensors, {}


def load_adapter(model: nn.Module, path: PathLike, strict: bool = False):
    """Load an adapter file into `model` (which already has LoRA layers).

    Shapes are checked first: one LoRAError names every key whose shape differs (file vs model).
    strict=False loads the keys that exist and ignores the rest, like loralib's
    `load_state_dict(..., strict=False)`; strict=True also fails on LoRA keys missing from the
    file and file keys missing from the model. Returns (missing LoRA keys, unexpected keys).
    """
    path = os.fspath(path)
    tensors, _ = read_adapter(path)
    own = model.state_dict()
    mismatched = [f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
                  for key, value in tensors.items() if key in own and own[key].shape != value.shape]
    if mismatched:
        raise LoRAError(f"adapter {path} does not fit the model; shape mismatches: " + "; ".join(mismatched))
    missing = [key for key in own if "lora_" in key and key not in tensors]
    unexpected = [key for key in tensors if key not in own]
    if strict and (missing or unexpected):
        raise LoRAError(f"adapter {path} does not match the model exactly; missing from file: "
                        f"{missing or 'none'}; not in model: {unexpected or 'none'}")
    model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    return missing, unexpected
