"""PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors), read and written
without PEFT, for any PyTorch model whose module names match the adapter's.

Two layers:
- files: `read_peft_dir(dir) -> (config, tensors)` (validated), `write_peft_dir(dir, config, tensors)`
  (atomic), `split_peft_tensors(tensors) -> (modules, extras)` and `join_peft_tensors(modules, extras)`
  (PEFT keys <-> per-module factor dicts), `peft_module_rank_alpha(config, name)`;
- models: `load_peft(model, dir, adapter_name=None, name_map=None)` injects the adapter the files
  describe and loads it; `save_peft(model, dir, base_model_name_or_path=None, adapter_name=None,
  name_map=None)` writes one adapter of the model as a PEFT directory.
Module names may be virtual slice names of fused layers (`...self_attn.q_proj` of a `qkv_proj` with
`lora_slices`), which map onto MergedLinear slices.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .adapter_io import check_finite
from .adapters import adapter_names, check_adapter_name
from .atomic import PathLike, atomic_write
from .base import DEFAULT_ADAPTER, LoRALayer
from .conv1d import is_conv1d
from .errors import LoRAError
from .inject import pattern_value, virtual_slice_name
from .layers import Embedding

PEFT_PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
# PEFT key suffix -> our part name (the factor it holds).
PEFT_PARTS = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B", "lora_magnitude_vector": "lora_magnitude_vector",
              "lora_embedding_A": "lora_embedding_A", "lora_embedding_B": "lora_embedding_B"}
_PART_KEYS = {part: suffix for suffix, part in PEFT_PARTS.items()}
# Options that change what a LoRA layer computes in ways lora_core does not implement.
_UNSUPPORTED = {"lora_bias": "LoRA bias terms (lora_B bias)", "layer_replication": "layer replication",
                "use_qalora": "QA-LoRA", "alora_invocation_tokens": "activated LoRA (aLoRA)",
                "target_parameters": "LoRA on nn.Parameter targets", "trainable_token_indices": "trainable tokens",
                "megatron_config": "Megatron layers", "use_bdlora": "BD-LoRA", "arrow_config": "Arrow routing"}
# The portable config keys PEFT has understood since 2024 (what the real GPT-2 adapters carry).
_BASE_CONFIG = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": None, "bias": "none",
                "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
                "lora_alpha": 8, "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core",
                "modules_to_save": None, "peft_type": "LORA", "r": 8, "rank_pattern": {}, "revision": None,
                "target_modules": [], "task_type": None, "use_dora": False, "use_rslora": False}

NameMap = Optional[Callable[[str], str]]


# ----- files ------------------------------------------------------------------------------------
def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_alpha(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value != 0


def check_peft_config(config: Any, source: str = "adapter_config.json") -> Dict[str, Any]:
    """`config` if it describes a PEFT LoRA adapter lora_core can compute exactly, else a LoRAError
    naming the key, its value and what to do."""
    if not isinstance(config, dict):
        raise LoRAError(f"{source} must hold a JSON object, not {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise LoRAError(f"{source}: peft_type={config.get('peft_type')!r}; only PEFT LoRA adapters (peft_type "
                        f"'LORA') can be loaded")
    if not _is_rank(config.get("r")):
        raise LoRAError(f"{source}: r={config.get('r')!r} must be an int >= 1")
    if not _is_alpha(config.get("lora_alpha", 8)):
        raise LoRAError(f"{source}: lora_alpha={config.get('lora_alpha')!r} must be a finite, non-zero number")
    for key, check, what in (("rank_pattern", _is_rank, "an int >= 1"),
                             ("alpha_pattern", _is_alpha, "a finite, non-zero number")):
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


def read_peft_dir(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
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
        try:
            tensors = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as err:
            raise LoRAError(f"{legacy} is not a weights-only torch file: {err}") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise LoRAError(f"{legacy} does not hold a dict of tensors")
    else:
        raise LoRAError(f"{folder} has no {WEIGHTS_FILE} (nor {LEGACY_WEIGHTS_FILE})")
    if not tensors:
        raise LoRAError(f"{folder}: the adapter weights file holds no tensors")
    check_finite(tensors, folder)
    return config, tensors


def split_peft_tensors(tensors: Dict[str, torch.Tensor], prefix: str = PEFT_PREFIX
                       ) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
    """PEFT keys -> ({module name: {part: tensor}}, {parameter name: tensor}).

    Parts are the keys of PEFT_PARTS' values ("lora_A", "lora_B", "lora_magnitude_vector",
    "lora_embedding_A", "lora_embedding_B"). Other tensors (modules_to_save copies, saved embedding
    bases) are extras, named like the model's own parameter (`.base_layer.` and
    `.modules_to_save.<adapter>.` dropped)."""
    modules: Dict[str, Dict[str, torch.Tensor]] = {}
    extras: Dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            raise LoRAError(f"PEFT tensor {key!r} does not start with {prefix!r}; not a PEFT adapter key")
        name = key[len(prefix):]
        for suffix, part in PEFT_PARTS.items():
            if name.endswith("." + suffix):
                module = name[:-len(suffix) - 1]
                if part in modules.setdefault(module, {}):
                    raise LoRAError(f"PEFT tensor {key!r} appears twice")
                modules[module][part] = value
                break
        else:
            if ".lora_" in name or name.startswith("lora_"):
                raise LoRAError(f"PEFT tensor {key!r} is a LoRA tensor lora_core does not know (bias of lora_B, "
                                f"or a named adapter's key?); only {sorted(PEFT_PARTS)} are supported")
            name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name).replace(".base_layer.", ".")
            extras[name] = value
    for module, parts in modules.items():
        pairs = ({"lora_A", "lora_B"}, {"lora_embedding_A", "lora_embedding_B"})
        if not any(pair <= set(parts) for pair in pairs):
            raise LoRAError(f"PEFT adapter module {module} has {sorted(parts)}; it needs both factors "
                            f"(lora_A and lora_B, or lora_embedding_A and lora_embedding_B)")
    return modules, extras


def join_peft_tensors(modules: Dict[str, Dict[str, torch.Tensor]], extras: Optional[Dict[str, torch.Tensor]] = None,
                      prefix: str = PEFT_PREFIX) -> Dict[str, torch.Tensor]:
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


def peft_module_rank_alpha(config: Dict[str, Any], module_name: str) -> Tuple[int, float]:
    """(r, lora_alpha) PEFT gives `module_name` under `config` (rank_pattern / alpha_pattern rule)."""
    rank = pattern_value(config.get("rank_pattern"), module_name, config["r"])
    alpha = pattern_value(config.get("alpha_pattern"), module_name, config.get("lora_alpha", 8))
    return rank, alpha


def write_peft_dir(path: PathLike, config: Dict[str, Any], tensors: Dict[str, torch.Tensor]) -> None:
    """Write a PEFT adapter directory: the weights (safetensors, metadata {"format": "pt"} as PEFT
    writes) then adapter_config.json, each atomically; the folder is created when missing. The
    config is completed with PEFT's portable defaults and checked first."""
    from safetensors.torch import save_file
    folder = os.fspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise LoRAError(f"{folder} exists and is not a directory; give a directory for the PEFT adapter")
    full = dict(_BASE_CONFIG, **config)
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


# ----- models -----------------------------------------------------------------------------------
def _virtual_slices(model: nn.Module) -> Dict[str, Tuple[str, str]]:
    # virtual slice name -> (fused module name, slice name)
    found = {}
    for name, module in model.named_modules():
        for slice_name in getattr(module, "lora_slices", None) or {}:
            found[virtual_slice_name(name, slice_name)] = (name, slice_name)
    return found


def _expected_shapes(module: nn.Module, rank: int, slice_rows: Optional[int], embedding: bool) -> Dict[str, tuple]:
    if embedding:
        return {"lora_embedding_A": (rank, module.num_embeddings), "lora_embedding_B": (module.embedding_dim, rank)}
    if is_conv1d(module):
        in_features, out_features = module.weight.shape  # Conv1D stores (in, out)
    else:
        in_features, out_features = module.in_features, module.out_features
    rows = out_features if slice_rows is None else slice_rows
    return {"lora_A": (rank, in_features), "lora_B": (rows, rank), "lora_magnitude_vector": (rows,)}


def _plan_load(model, config, modules, name_map, source) -> List[Tuple[str, str, Dict[str, torch.Tensor]]]:
    """(model name, PEFT name, parts) per adapted module, every shape checked against the model."""
    own = dict(model.named_modules())
    virtual = _virtual_slices(model)
    plan, problems = [], []
    for peft_name, parts in modules.items():
        name = name_map(peft_name) if name_map else peft_name
        embedding = "lora_embedding_A" in parts
        if name in own:
            module, slice_rows = own[name], None
        elif name in virtual and not embedding:
            fused, slice_name = virtual[name]
            module, slice_rows = own[fused], own[fused].lora_slices[slice_name]
        else:
            problems.append(f"{peft_name}: no module {name!r} in {type(model).__name__}")
            continue
        if embedding and not isinstance(module, nn.Embedding):
            problems.append(f"{peft_name}: embedding factors, but {name} is a {type(module).__name__}")
            continue
        if not embedding and not (isinstance(module, nn.Linear) or is_conv1d(module)):
            problems.append(f"{peft_name}: {name} is a {type(module).__name__}; lora_core loads PEFT LoRA for "
                            f"Linear, Conv1D, Linear4bit and Embedding layers")
            continue
        rank, _ = peft_module_rank_alpha(config, peft_name)
        for part, shape in _expected_shapes(module, rank, slice_rows, embedding).items():
            if part in parts and tuple(parts[part].shape) != shape:
                problems.append(f"{peft_name}.{part}: file {tuple(parts[part].shape)} vs expected {shape} "
                                f"(rank {rank} from r/rank_pattern)")
        plan.append((name, peft_name, parts))
    if problems:
        raise LoRAError(f"PEFT adapter {source} does not fit {type(model).__name__}: " + "; ".join(problems))
    return plan


def _holder(layer: LoRALayer, adapter_name: str):
    return layer if adapter_name == DEFAULT_ADAPTER else layer.lora_adapters[adapter_name]


def _slice_rows(holder, fused: nn.Module, slice_name: str) -> Tuple[slice, slice]:
    """(rows of lora_A, rows of lora_B) holding slice `slice_name`'s factors in a sliced holder."""
    out_start = 0
    for name, size in fused.lora_slices.items():
        if name == slice_name:
            break
        out_start += size
    for group, (start, size, b_start) in enumerate(holder._enabled_spans):
        if start == out_start:
            return slice(group * holder.r, (group + 1) * holder.r), slice(b_start, b_start + size)
    raise LoRAError(f"slice {slice_name} of {type(fused).__name__} carries no LoRA")


def load_peft(model: nn.Module, path: PathLike, adapter_name: Optional[str] = None, *,
              name_map: NameMap = None, prefix: str = PEFT_PREFIX) -> List[str]:
    """Load a PEFT LoRA adapter directory into `model` as adapter `adapter_name` (default "default").

    The model's module names must match the adapter's (after `name_map`, a function from PEFT module
    name to model module name, when given); names may be virtual slice names of fused layers.
    Linear, transformers Conv1D, Linear4bit and Embedding layers; rank/alpha patterns, rsLoRA and
    DoRA as the config says. Non-LoRA tensors (modules_to_save, e.g. a classifier head) are copied
    into the model's parameters of the same name. Everything is checked before the model changes.
    Returns the adapted module names.
    """
    from .inject import inject
    adapter_name = check_adapter_name(adapter_name or DEFAULT_ADAPTER)
    if not isinstance(model, nn.Module):
        raise LoRAError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if adapter_name in adapter_names(model):
        raise LoRAError(f"the model already has an adapter {adapter_name!r}; delete it first "
                        f"(lora_core.delete_adapter) or pass another adapter_name")
    source = os.fspath(path)
    config, tensors = read_peft_dir(source)
    modules, extras = split_peft_tensors(tensors, prefix)
    if not modules:
        raise LoRAError(f"PEFT adapter {source} holds no LoRA factors")
    plan = _plan_load(model, config, modules, name_map, source)
    params = dict(model.named_parameters())
    for name, value in extras.items():
        if name not in params or params[name].shape != value.shape:
            found = tuple(params[name].shape) if name in params else "absent"
            raise LoRAError(f"PEFT adapter {source} holds {name} {tuple(value.shape)} (modules_to_save), but the "
                            f"model's is {found}; load it into the model class it was trained with")
    if extras and adapter_name != DEFAULT_ADAPTER:
        raise LoRAError(f"PEFT adapter {source} replaces whole modules ({sorted(extras)}); that is only "
                        f"supported as the default adapter")
    names = [name for name, _, _ in plan]
    rank_pattern = {re.escape(name): peft_module_rank_alpha(config, peft)[0] for name, peft, _ in plan}
    alpha_pattern = {re.escape(name): peft_module_rank_alpha(config, peft)[1] for name, peft, _ in plan}
    adapted = inject(model, "|".join(re.escape(n) for n in names), r=config["r"],
                     lora_alpha=config.get("lora_alpha", 8), lora_dropout=float(config.get("lora_dropout") or 0.0),
                     adapter_name=adapter_name, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                     use_rslora=config.get("use_rslora", False), use_dora=config.get("use_dora", False))
    own, virtual = dict(model.named_modules()), _virtual_slices(model)
    with torch.no_grad():
        for name, _, parts in plan:
            if name in own:
                holder = _holder(own[name], adapter_name)
                rows_A = rows_B = slice(None)
            else:
                fused_name, slice_name = virtual[name]
                holder = _holder(own[fused_name], adapter_name)
                rows_A, rows_B = _slice_rows(holder, own[fused_name], slice_name)
            A = parts.get("lora_A", parts.get("lora_embedding_A"))
            B = parts.get("lora_B", parts.get("lora_embedding_B"))
            holder.lora_A[rows_A] = A.to(holder.lora_A.dtype)
            holder.lora_B[rows_B] = B.to(holder.lora_B.dtype)
            if "lora_magnitude_vector" in parts:
                holder.lora_magnitude_vector.copy_(parts["lora_magnitude_vector"])
        for name, value in extras.items():
            params[name].copy_(value)
    record = model.lora_core_adapters[adapter_name]
    record.update(r=config["r"], lora_alpha=config.get("lora_alpha", 8),
                  rank_pattern=dict(config.get("rank_pattern") or {}),
                  alpha_pattern=dict(config.get("alpha_pattern") or {}),
                  peft_config=config, peft_extras=sorted(extras))
    if name_map is None:  # PEFT's patterns apply to our names as they are; recorded as PEFT wrote them
        for key in ("rank_pattern", "alpha_pattern"):
            if not record[key]:
                record.pop(key)
    else:  # our names differ from PEFT's: keep the per-module values inject used
        record.update(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    return adapted


def _layer_parts(name: str, layer: LoRALayer, adapter_name: str) -> List[Tuple[str, Dict[str, torch.Tensor], Any]]:
    """[(module name, parts, holder)] of one layer's adapter: one entry, or one per enabled slice."""
    holder = _holder(layer, adapter_name)
    kind = getattr(holder, "kind", None)
    if isinstance(layer, Embedding):
        return [(name, {"lora_embedding_A": holder.lora_A, "lora_embedding_B": holder.lora_B}, holder)]
    if not (isinstance(layer, nn.Linear) or is_conv1d(layer)) or kind == "conv":
        raise LoRAError(f"{name}: {type(layer).__name__} has no PEFT LoRA equivalent in lora_core's layout "
                        f"(PEFT's convolution LoRA factors differ); save it with lora_core.save_adapter")
    sliced = kind == "sliced" if holder is not layer else hasattr(layer, "_enabled_spans")
    if not sliced:
        parts = {"lora_A": holder.lora_A, "lora_B": holder.lora_B}
        if getattr(holder, "use_dora", False):
            parts["lora_magnitude_vector"] = holder.lora_magnitude_vector
        return [(name, parts, holder)]
    entries = []
    for slice_name in layer.lora_slices:
        try:
            rows_A, rows_B = _slice_rows(holder, layer, slice_name)
        except LoRAError:
            continue  # a slice without LoRA
        entries.append((virtual_slice_name(name, slice_name),
                        {"lora_A": holder.lora_A[rows_A], "lora_B": holder.lora_B[rows_B]}, holder))
    return entries


def save_peft(model: nn.Module, path: PathLike, base_model_name_or_path: Optional[str] = None,
              adapter_name: Optional[str] = None, *, name_map: NameMap = None, prefix: str = PEFT_PREFIX
              ) -> Dict[str, Any]:
    """Write adapter `adapter_name` (default "default") of `model` as a PEFT LoRA directory that
    `peft.PeftModel.from_pretrained(base, path)` loads to the same outputs. Module names are the
    model's (through `name_map`, model name -> PEFT name, when given); fused-layer slices become
    their virtual names. Per-module ranks/alphas that differ from the most common ones go into
    rank_pattern / alpha_pattern; a config loaded by load_peft is kept (task type, modules_to_save,
    ...) and its extra tensors are written back. Returns the config written."""
    adapter_name = check_adapter_name(adapter_name or DEFAULT_ADAPTER)
    if base_model_name_or_path is not None and not isinstance(base_model_name_or_path, str):
        raise LoRAError(f"base_model_name_or_path={base_model_name_or_path!r} must be a string (a hub id or path)")
    if adapter_name not in adapter_names(model):
        raise LoRAError(f"the model has no adapter {adapter_name!r}; its adapters: {adapter_names(model) or 'none'}")
    entries = []
    for name, module in model.named_modules():
        if isinstance(module, LoRALayer) and module.has_adapter(adapter_name):
            entries.extend(_layer_parts(name, module, adapter_name))
    modules, ranks, alphas, rslora, dora, conv1d = {}, {}, {}, set(), set(), False
    own = dict(model.named_modules())
    for name, parts, holder in entries:
        peft_name = name_map(name) if name_map else name
        modules[peft_name] = parts
        ranks[peft_name], alphas[peft_name] = holder.r, holder.lora_alpha
        rslora.add(bool(holder.use_rslora))
        dora.add(bool(getattr(holder, "use_dora", False)))
        conv1d = conv1d or is_conv1d(own.get(name))
    if len(rslora) > 1 or len(dora) > 1:
        raise LoRAError(f"adapter {adapter_name!r} mixes layers with and without rsLoRA/DoRA; PEFT has one "
                        f"use_rslora and one use_dora flag per adapter")
    record = (getattr(model, "lora_core_adapters", None) or {}).get(adapter_name) or {}
    config = dict(record.get("peft_config") or {})
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config.update(
        peft_type="LORA", r=rank, lora_alpha=alpha, target_modules=sorted(modules),
        rank_pattern={n: v for n, v in ranks.items() if v != rank},
        alpha_pattern={n: v for n, v in alphas.items() if v != alpha},
        use_rslora=rslora.pop(), use_dora=dora.pop(), fan_in_fan_out=conv1d,
        lora_dropout=float(record.get("lora_dropout", config.get("lora_dropout", 0.0)) or 0.0))
    if base_model_name_or_path is not None:
        config["base_model_name_or_path"] = base_model_name_or_path
    # Patterns key full module names: PEFT matches a key against the end of a name, so a full name
    # picks exactly its module.
    params = dict(model.named_parameters())
    extras = {name: params[name] for name in record.get("peft_extras", []) if name in params}
    tensors = join_peft_tensors(modules, extras, prefix)
    write_peft_dir(path, config, tensors)
    return dict(_BASE_CONFIG, **config)
