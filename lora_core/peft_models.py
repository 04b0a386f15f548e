"""load_peft / save_peft: PEFT LoRA adapters for any PyTorch model whose module names match the
adapter's (transformers models in particular). Module names may be virtual slice names of fused
layers (`...self_attn.q_proj` of a `qkv_proj` with `lora_slices`), which map onto MergedLinear
slices. The file layer is peft_files.py.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from lora_core.adapters import adapter_names, check_adapter_name
from lora_core.atomic import PathLike
from lora_core.base import DEFAULT_ADAPTER, LoRALayer
from lora_core.conv1d import is_conv1d
from lora_core.errors import LoRAError
from lora_core.inject import virtual_slice_name
from lora_core.layers import Embedding
from lora_core.peft_files import (
    BASE_CONFIG,
    PEFT_PREFIX,
    join_peft_tensors,
    peft_module_rank_alpha,
    read_peft_dir,
    split_peft_tensors,
    write_peft_dir,
)

NameMap = Callable[[str], str] | None


def _virtual_slices(model: nn.Module) -> dict[str, tuple[str, str]]:
    # virtual slice name -> (fused module name, slice name)
    found = {}
    for name, module in model.named_modules():
        for slice_name in getattr(module, "lora_slices", None) or {}:
            found[virtual_slice_name(name, slice_name)] = (name, slice_name)
    return found


def _expected_shapes(module: nn.Module, rank: int, slice_rows: int | None, embedding: bool) -> dict[str, tuple]:
    if embedding:
        return {"lora_embedding_A": (rank, module.num_embeddings), "lora_embedding_B": (module.embedding_dim, rank)}
    if is_conv1d(module):
        in_features, out_features = module.weight.shape  # Conv1D stores (in, out)
    else:
        in_features, out_features = module.in_features, module.out_features
    rows = out_features if slice_rows is None else slice_rows
    return {"lora_A": (rank, in_features), "lora_B": (rows, rank), "lora_magnitude_vector": (rows,)}


def _plan_load(model, config, modules, name_map, source) -> list[tuple[str, str, dict[str, torch.Tensor]]]:
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
            problems.append(
                f"{peft_name}: {name} is a {type(module).__name__}; lora_core loads PEFT LoRA for "
                f"Linear, Conv1D, Linear4bit and Embedding layers"
            )
            continue
        rank, _ = peft_module_rank_alpha(config, peft_name)
        for part, shape in _expected_shapes(module, rank, slice_rows, embedding).items():
            if part in parts and tuple(parts[part].shape) != shape:
                problems.append(
                    f"{peft_name}.{part}: file {tuple(parts[part].shape)} vs expected {shape} "
                    f"(rank {rank} from r/rank_pattern)"
                )
        plan.append((name, peft_name, parts))
    if problems:
        raise LoRAError(f"PEFT adapter {source} does not fit {type(model).__name__}: " + "; ".join(problems))
    return plan


def _holder(layer: LoRALayer, adapter_name: str):
    return layer if adapter_name == DEFAULT_ADAPTER else layer.lora_adapters[adapter_name]


def _slice_rows(holder, fused: nn.Module, slice_name: str) -> tuple[slice, slice]:
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


def load_peft(
    model: nn.Module,
    path: PathLike,
    adapter_name: str | None = None,
    *,
    name_map: NameMap = None,
    prefix: str = PEFT_PREFIX,
) -> list[str]:
    """Load a PEFT LoRA adapter directory into `model` as adapter `adapter_name` (default "default").

    The model's module names must match the adapter's (after `name_map`, a function from PEFT module
    name to model module name, when given); names may be virtual slice names of fused layers.
    Linear, transformers Conv1D, Linear4bit and Embedding layers; rank/alpha patterns, rsLoRA and
    DoRA as the config says. Non-LoRA tensors (modules_to_save, e.g. a classifier head) are copied
    into the model's parameters of the same name. Everything is checked before the model changes.
    Returns the adapted module names.
    """
    from lora_core.inject import inject

    adapter_name = check_adapter_name(adapter_name or DEFAULT_ADAPTER)
    if not isinstance(model, nn.Module):
        raise LoRAError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if adapter_name in adapter_names(model):
        raise LoRAError(
            f"the model already has an adapter {adapter_name!r}; delete it first "
            f"(lora_core.delete_adapter) or pass another adapter_name"
        )
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
            raise LoRAError(
                f"PEFT adapter {source} holds {name} {tuple(value.shape)} (modules_to_save), but the "
                f"model's is {found}; load it into the model class it was trained with"
            )
    if extras and adapter_name != DEFAULT_ADAPTER:
        raise LoRAError(
            f"PEFT adapter {source} replaces whole modules ({sorted(extras)}); that is only "
            f"supported as the default adapter"
        )
    names = [name for name, _, _ in plan]
    rank_pattern = {re.escape(name): peft_module_rank_alpha(config, peft)[0] for name, peft, _ in plan}
    alpha_pattern = {re.escape(name): peft_module_rank_alpha(config, peft)[1] for name, peft, _ in plan}
    adapted = inject(
        model,
        "|".join(re.escape(n) for n in names),
        r=config["r"],
        lora_alpha=config.get("lora_alpha", 8),
        lora_dropout=float(config.get("lora_dropout") or 0.0),
        adapter_name=adapter_name,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=config.get("use_rslora", False),
        use_dora=config.get("use_dora", False),
    )
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
    record.update(
        r=config["r"],
        lora_alpha=config.get("lora_alpha", 8),
        rank_pattern=dict(config.get("rank_pattern") or {}),
        alpha_pattern=dict(config.get("alpha_pattern") or {}),
        peft_config=config,
        peft_extras=sorted(extras),
    )
    if name_map is None:  # PEFT's patterns apply to our names as they are; recorded as PEFT wrote them
        for key in ("rank_pattern", "alpha_pattern"):
            if not record[key]:
                record.pop(key)
    else:  # our names differ from PEFT's: keep the per-module values inject used
        record.update(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    return adapted


def _layer_parts(name: str, layer: LoRALayer, adapter_name: str) -> list[tuple[str, dict[str, torch.Tensor], Any]]:
    """[(module name, parts, holder)] of one layer's adapter: one entry, or one per enabled slice."""
    holder = _holder(layer, adapter_name)
    kind = getattr(holder, "kind", None)
    if isinstance(layer, Embedding):
        return [(name, {"lora_embedding_A": holder.lora_A, "lora_embedding_B": holder.lora_B}, holder)]
    if not (isinstance(layer, nn.Linear) or is_conv1d(layer)) or kind == "conv":
        raise LoRAError(
            f"{name}: {type(layer).__name__} has no PEFT LoRA equivalent in lora_core's layout "
            f"(PEFT's convolution LoRA factors differ); save it with lora_core.save_adapter"
        )
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
        entries.append(
            (
                virtual_slice_name(name, slice_name),
                {"lora_A": holder.lora_A[rows_A], "lora_B": holder.lora_B[rows_B]},
                holder,
            )
        )
    return entries


def save_peft(
    model: nn.Module,
    path: PathLike,
    base_model_name_or_path: str | None = None,
    adapter_name: str | None = None,
    *,
    name_map: NameMap = None,
    prefix: str = PEFT_PREFIX,
) -> dict[str, Any]:
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
        raise LoRAError(
            f"adapter {adapter_name!r} mixes layers with and without rsLoRA/DoRA; PEFT has one "
            f"use_rslora and one use_dora flag per adapter"
        )
    record = (getattr(model, "lora_core_adapters", None) or {}).get(adapter_name) or {}
    config = dict(record.get("peft_config") or {})
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config.update(
        peft_type="LORA",
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(modules),
        rank_pattern={n: v for n, v in ranks.items() if v != rank},
        alpha_pattern={n: v for n, v in alphas.items() if v != alpha},
        use_rslora=rslora.pop(),
        use_dora=dora.pop(),
        fan_in_fan_out=conv1d,
        lora_dropout=float(record.get("lora_dropout", config.get("lora_dropout", 0.0)) or 0.0),
    )
    if base_model_name_or_path is not None:
        config["base_model_name_or_path"] = base_model_name_or_path
    # Patterns key full module names: PEFT matches a key against the end of a name, so a full name
    # picks exactly its module.
    params = dict(model.named_parameters())
    extras = {name: params[name] for name in record.get("peft_extras", []) if name in params}
    tensors = join_peft_tensors(modules, extras, prefix)
    write_peft_dir(path, config, tensors)
    return dict(BASE_CONFIG, **config)
