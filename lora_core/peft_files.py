"""PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors), read and written
without PEFT: the file layer under `peft_models.load_peft` / `save_peft`, for model-specific
mappings to build on.

`read_peft_dir(dir) -> (config, tensors)` (validated), `write_peft_dir(dir, config, tensors)`
(atomic), `split_peft_tensors(tensors) -> (modules, extras)` and `join_peft_tensors(modules, extras)`
(PEFT keys <-> per-module factor dicts), `peft_module_rank_alpha(config, name)`.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import torch

from lora_core.adapter_io import check_finite, load_torch_tensors
from lora_core.atomic import PathLike, atomic_write
from lora_core.errors import LoRAError
from lora_core.inject import pattern_value

PEFT_PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
# PEFT key suffix -> our part name (the factor it holds).
PEFT_PARTS = {
    "lora_A.weight": "lora_A",
    "lora_B.weight": "lora_B",
    "lora_magnitude_vector": "lora_magnitude_vector",
    "lora_embedding_A": "lora_embedding_A",
    "lora_embedding_B": "lora_embedding_B",
}
_PART_KEYS = {part: suffix for suffix, part in PEFT_PARTS.items()}
# Options that change what a LoRA layer computes in ways lora_core does not implement.
_UNSUPPORTED = {
    "lora_bias": "LoRA bias terms (lora_B bias)",
    "layer_replication": "layer replication",
    "use_qalora": "QA-LoRA",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "target_parameters": "LoRA on nn.Parameter targets",
    "trainable_token_indices": "trainable tokens",
    "megatron_config": "Megatron layers",
    "use_bdlora": "BD-LoRA",
    "arrow_config": "Arrow routing",
}
# The portable config keys PEFT has understood since 2024 (what the real GPT-2 adapters carry).
BASE_CONFIG = {
    "alpha_pattern": {},
    "auto_mapping": None,
    "base_model_name_or_path": None,
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layer_replication": None,
    "layers_pattern": None,
    "layers_to_transform": None,
    "loftq_config": {},
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 8,
    "rank_pattern": {},
    "revision": None,
    "target_modules": [],
    "task_type": None,
    "use_dora": False,
    "use_rslora": False,
}


# ----- files ------------------------------------------------------------------------------------
def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_alpha(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value != 0


def check_peft_config(config: Any, source: str = "adapter_config.json") -> dict[str, Any]:
    """`config` if it describes a PEFT LoRA adapter lora_core can compute exactly, else a LoRAError
    naming the key, its value and what to do."""
    if not isinstance(config, dict):
        raise LoRAError(f"{source} must hold a JSON object, not {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise LoRAError(
            f"{source}: peft_type={config.get('peft_type')!r}; only PEFT LoRA adapters (peft_type 'LORA') can be loaded"
        )
    if not _is_rank(config.get("r")):
        raise LoRAError(f"{source}: r={config.get('r')!r} must be an int >= 1")
    if not _is_alpha(config.get("lora_alpha", 8)):
        raise LoRAError(f"{source}: lora_alpha={config.get('lora_alpha')!r} must be a finite, non-zero number")
    for key, check, what in (
        ("rank_pattern", _is_rank, "an int >= 1"),
        ("alpha_pattern", _is_alpha, "a finite, non-zero number"),
    ):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict):
            raise LoRAError(f"{source}: {key} must be an object of module pattern -> value, not {pattern!r}")
        for name, value in pattern.items():
            if not check(value):
                raise LoRAError(f"{source}: {key}[{name!r}]={value!r} must be {what}")
            try:
                re.compile(name)
            except re.error as err:
                raise LoRAError(f"{source}: {key} key {name!r} is not a valid regular expression: {err}") from None
    for key, feature in _UNSUPPORTED.items():
        if config.get(key) not in (None, False, [], {}, ""):
            raise LoRAError(f"{source}: {key}={config[key]!r} ({feature}) is not supported by lora_core")
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if not isinstance(config.get(key, False), bool):
            raise LoRAError(f"{source}: {key}={config.get(key)!r} must be true or false")
    return config


def read_peft_dir(path: PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, tensors) of a PEFT LoRA adapter directory: adapter_config.json checked by
    `check_peft_config`, weights from adapter_model.safetensors (or a weights-only
    adapter_model.bin), refused when any value is NaN or infinite. Keys stay as PEFT wrote them."""
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise LoRAError(f"PEFT adapter directory {folder} does not exist (or is not a directory)")
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise LoRAError(f"{folder} has no {CONFIG_FILE}; it is not a PEFT adapter directory")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoRAError(f"{config_path} is not valid JSON: {err}") from None
    check_peft_config(config, config_path)
    weights = os.path.join(folder, WEIGHTS_FILE)
    legacy = os.path.join(folder, LEGACY_WEIGHTS_FILE)
    if os.path.isfile(weights):
        from safetensors.torch import load_file

        try:
            tensors = load_file(weights)
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise LoRAError(f"{weights} is not a readable safetensors file: {err}") from None
    elif os.path.isfile(legacy):
        tensors = load_torch_tensors(legacy, legacy)
    else:
        raise LoRAError(f"{folder} has no {WEIGHTS_FILE} (nor {LEGACY_WEIGHTS_FILE})")
    if not tensors:
        raise LoRAError(f"{folder}: the adapter weights file holds no tensors")
    check_finite(tensors, folder)
    return config, tensors


def split_peft_tensors(
    tensors: dict[str, torch.Tensor], prefix: str = PEFT_PREFIX
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """PEFT keys -> ({module name: {part: tensor}}, {parameter name: tensor}).

    Parts are the keys of PEFT_PARTS' values ("lora_A", "lora_B", "lora_magnitude_vector",
    "lora_embedding_A", "lora_embedding_B"). Other tensors (modules_to_save copies, saved embedding
    bases) are extras, named like the model's own parameter (`.base_layer.` and
    `.modules_to_save.<adapter>.` dropped)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    extras: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            raise LoRAError(f"PEFT tensor {key!r} does not start with {prefix!r}; not a PEFT adapter key")
        name = key[len(prefix) :]
        for suffix, part in PEFT_PARTS.items():
            if name.endswith("." + suffix):
                module = name[: -len(suffix) - 1]
                if part in modules.setdefault(module, {}):
                    raise LoRAError(f"PEFT tensor {key!r} appears twice")
                modules[module][part] = value
                break
        else:
            if ".lora_" in name or name.startswith("lora_"):
                raise LoRAError(
                    f"PEFT tensor {key!r} is a LoRA tensor lora_core does not know (bias of lora_B, "
                    f"or a named adapter's key?); only {sorted(PEFT_PARTS)} are supported"
                )
            name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name).replace(".base_layer.", ".")
            extras[name] = value
    for module, parts in modules.items():
        pairs = ({"lora_A", "lora_B"}, {"lora_embedding_A", "lora_embedding_B"})
        if not any(pair <= set(parts) for pair in pairs):
            raise LoRAError(
                f"PEFT adapter module {module} has {sorted(parts)}; it needs both factors "
                f"(lora_A and lora_B, or lora_embedding_A and lora_embedding_B)"
            )
    return modules, extras


def join_peft_tensors(
    modules: dict[str, dict[str, torch.Tensor]],
    extras: dict[str, torch.Tensor] | None = None,
    prefix: str = PEFT_PREFIX,
) -> dict[str, torch.Tensor]:
    """The inverse of split_peft_tensors: PEFT keys for per-module parts and extra parameters."""
    tensors = {}
    for module, parts in modules.items():
        for part, value in parts.items():
            if part not in _PART_KEYS:
                raise LoRAError(f"{module}: part {part!r} is not one of {sorted(_PART_KEYS)}")
            tensors[f"{prefix}{module}.{_PART_KEYS[part]}"] = value
    for name, value in (extras or {}).items():
        tensors[prefix + name] = value
    return tensors


def peft_module_rank_alpha(config: dict[str, Any], module_name: str) -> tuple[int, float]:
    """(r, lora_alpha) PEFT gives `module_name` under `config` (rank_pattern / alpha_pattern rule)."""
    rank = pattern_value(config.get("rank_pattern"), module_name, config["r"])
    alpha = pattern_value(config.get("alpha_pattern"), module_name, config.get("lora_alpha", 8))
    return rank, alpha


def write_peft_dir(path: PathLike, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write a PEFT adapter directory: the weights (safetensors, metadata {"format": "pt"} as PEFT
    writes) then adapter_config.json, each atomically; the folder is created when missing. The
    config is completed with PEFT's portable defaults and checked first."""
    from safetensors.torch import save_file

    folder = os.fspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise LoRAError(f"{folder} exists and is not a directory; give a directory for the PEFT adapter")
    full = dict(BASE_CONFIG, **config)
    check_peft_config(full, os.path.join(folder, CONFIG_FILE))
    try:
        text = json.dumps(full, indent=2, sort_keys=True) + "\n"
    except TypeError as err:
        raise LoRAError(f"PEFT config for {folder} is not JSON-serializable: {err}") from None
    owned = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, WEIGHTS_FILE), lambda tmp: save_file(owned, tmp, metadata={"format": "pt"}))

    def write_config(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(os.path.join(folder, CONFIG_FILE), write_config)
