"""Adapter files: lora_state_dict in one safetensors file, the LoRA config as JSON metadata."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
import torch.nn as nn

from lora_core.adapters import adapter_names, check_adapter_name, check_adapter_names
from lora_core.atomic import PathLike, atomic_write
from lora_core.base import DEFAULT_ADAPTER
from lora_core.errors import LoRAError
from lora_core.merging import lora_layers
from lora_core.utils import lora_state_dict

CONFIG_KEY = "lora_config"


def adapter_state_dict(model: nn.Module, adapter_name: str, bias: str = "none") -> dict[str, torch.Tensor]:
    """One adapter's tensors in loralib's layout (`<layer>.lora_A`, ...), whichever adapter it is:
    a named adapter's `<layer>.lora_adapters.<name>.lora_A` keys lose their `lora_adapters.<name>.`."""
    check_adapter_names(model, [adapter_name])
    selected = {}
    slot_infix = f".lora_adapters.{adapter_name}."
    for key, value in lora_state_dict(model, bias).items():
        if ".lora_adapters." in key:
            if slot_infix in key:
                selected[key.replace(slot_infix, ".", 1)] = value
        elif "lora_" not in key or adapter_name == DEFAULT_ADAPTER:
            selected[key] = value
    return selected


def save_adapter(
    model: nn.Module,
    path: PathLike,
    config: dict[str, Any] | None = None,
    bias: str = "none",
    adapter_name: str | None = None,
) -> dict[str, torch.Tensor]:
    """Write `lora_state_dict(model, bias)` to a safetensors file at `path`, atomically, with
    `config` (default: the config `inject` recorded on the model) as JSON metadata. With
    `adapter_name`, only that adapter is written, in loralib's layout, with its own config, so the
    file loads into any adapter slot. Returns the tensors written."""
    from safetensors.torch import save_file

    if adapter_name is None:
        state = lora_state_dict(model, bias)
    else:
        state = adapter_state_dict(model, check_adapter_name(adapter_name), bias)
    # Own copies: safetensors refuses tensors that share storage (e.g. tied biases with bias="all").
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    if not tensors:
        raise LoRAError(
            f"{type(model).__name__} has no LoRA parameters to save to {os.fspath(path)}; "
            f"add LoRA first (lora_core.inject or lora_core layers)"
        )
    if config is None:
        if adapter_name is None:
            config = getattr(model, "lora_core_config", None) or {}
        else:
            config = (getattr(model, "lora_core_adapters", None) or {}).get(adapter_name) or {}
    try:
        metadata = {"format": "pt", CONFIG_KEY: json.dumps(config, sort_keys=True)}
    except TypeError as err:
        raise LoRAError(f"adapter config for {os.fspath(path)} is not JSON-serializable: {err}") from None
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return tensors


def read_adapter(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
    return load_torch_tensors(path, f"adapter file {path}", "neither safetensors nor a weights-only torch file"), {}


def load_torch_tensors(path, label: str, not_readable: str = "not a weights-only torch file") -> dict:
    """A dict of tensors from a torch file, unpickled with ``weights_only=True`` and checked; else a LoRAError."""
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise LoRAError(f"{label} is {not_readable}: {err}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise LoRAError(f"{label} does not hold a dict of tensors")
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """LoRAError naming the tensors of `source` that hold NaN or infinite values (they would turn
    every output they touch into NaN)."""
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise LoRAError(
            f"adapter {source} holds NaN or infinite values in {shown}; it is broken (a diverged "
            f"training run?): use an earlier checkpoint"
        )


def _inject_from_config(model: nn.Module, path: str, config: dict[str, Any], adapter_name: str) -> None:
    # The file names the layers it adapted and how: give the model that adapter before loading.
    from lora_core.inject import inject

    adapted = config.get("adapted")
    if not isinstance(adapted, list) or not adapted or not all(isinstance(n, str) for n in adapted):
        raise LoRAError(
            f"adapter {path} carries no lora_core config naming its layers ('adapted'), so adapter "
            f"{adapter_name!r} cannot be created from it; inject that adapter first, then load"
        )
    targets = "|".join(re.escape(name) for name in adapted)
    inject(
        model,
        targets,
        r=config.get("r", 8),
        lora_alpha=config.get("lora_alpha", 8),
        lora_dropout=config.get("lora_dropout", 0.0),
        adapter_name=adapter_name,
        rank_pattern=config.get("rank_pattern"),
        alpha_pattern=config.get("alpha_pattern"),
        use_rslora=bool(config.get("use_rslora", False)),
        use_dora=bool(config.get("use_dora", False)),
        freeze_base=False,
    )


def load_adapter(model: nn.Module, path: PathLike, strict: bool = False, adapter_name: str | None = None):
    """Load an adapter file into `model`.

    Without `adapter_name` the model must already have LoRA layers and the file's keys are its
    state-dict keys. With `adapter_name` the file (loralib layout, as `save_adapter` writes) goes
    into that adapter; a model without it first gets it, on the layers and with the ranks the
    file's config records. Shapes are checked first: one LoRAError names every key whose shape
    differs (file vs model). strict=False loads the keys that exist and ignores the rest, like
    loralib's `load_state_dict(..., strict=False)`; strict=True also fails on LoRA keys missing
    from the file and file keys missing from the model. Files with NaN/inf values are refused.
    Returns (missing LoRA keys, unexpected keys).
    """
    if not isinstance(model, nn.Module):
        raise LoRAError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise LoRAError(f"path={path!r} must be a file path (str or os.PathLike)")
    if not isinstance(strict, bool):
        raise LoRAError(f"strict={strict!r} must be True or False")
    path = os.fspath(path)
    tensors, config = read_adapter(path)
    check_finite(tensors, path)
    if adapter_name is None:
        if not lora_layers(model):
            raise LoRAError(
                f"{type(model).__name__} has no LoRA layers, so adapter {path} would load nothing; "
                f"call lora_core.inject first, or pass adapter_name=... to create the adapter from "
                f"the file's config"
            )
        own = model.state_dict()
        rename = {key: key for key in tensors}
    else:
        check_adapter_name(adapter_name)
        if adapter_name not in adapter_names(model):
            _inject_from_config(model, path, config, adapter_name)
        full = model.state_dict()
        own_keys = {}
        for key in full:  # loralib-layout name -> model key, for this adapter
            if ".lora_adapters." in key:
                infix = f".lora_adapters.{adapter_name}."
                if infix in key:
                    own_keys[key.replace(infix, ".", 1)] = key
            elif "lora_" not in key or adapter_name == DEFAULT_ADAPTER:
                own_keys[key] = key
        own = {k: full[v] for k, v in own_keys.items()}
        rename = {key: own_keys.get(key, key) for key in tensors}
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in tensors.items()
        if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise LoRAError(f"adapter {path} does not fit the model; shape mismatches: " + "; ".join(mismatched))
    missing = [key for key in own if "lora_" in key and key not in tensors]
    unexpected = [key for key in tensors if key not in own]
    if strict and (missing or unexpected):
        raise LoRAError(
            f"adapter {path} does not match the model exactly; missing from file: "
            f"{missing or 'none'}; not in model: {unexpected or 'none'}"
        )
    model.load_state_dict({rename[k]: v for k, v in tensors.items() if k in own}, strict=False)
    return missing, unexpected
