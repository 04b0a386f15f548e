"""PEFT adapter directories for Phi models, both ways: ``export_peft_adapter`` and ``load_peft_adapter``.

The name and tensor mapping lives in ``peft_keys`` (pure functions); this module checks PEFT configs,
creates our LoRA layers to match and moves the tensors. What cannot be represented exactly is refused
with a PhiModelError naming the key or option, never ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import PhiModelError
from .peft_keys import (
    PEFT_PREFIX,
    hf_module_names,
    lora_modules_to_peft,
    our_target,
    parse_peft_tensors,
    pattern_value,
    peft_config_for,
    peft_tensors_for,
    scaling,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
FUSED_METADATA_KEY = "philora_fused"  # safetensors metadata: how stacked Phi-3 adapters were built from slices

# Options whose non-empty value changes what the adapter computes in ways philora does not implement.
_UNSUPPORTED_OPTIONS = ("layer_replication", "target_parameters", "trainable_token_indices", "alora_invocation_tokens",
                        "arrow_config", "megatron_config", "use_qalora", "lora_bias", "fan_in_fan_out")
# init_lora_weights values that also rewrite the base weights (the adapter alone is not the model).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


# ---- export ----------------------------------------------------------------------------------


def export_peft_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None,
                        revision: str | None = None) -> Path:
    """Write ``model``'s LoRA as a PEFT adapter directory (adapter_config.json + adapter_model.safetensors).

    ``peft.PeftModel.from_pretrained(<transformers model of the same checkpoint>, out_dir)`` then gives our
    logits. Files are written atomically; returns ``out_dir``.
    """
    from lora_core import atomic_write, lora_layers
    from safetensors.torch import save_file

    entries = lora_modules_to_peft(model)
    dropout = next((float(getattr(layer.lora_dropout, "p", 0.0)) for layer in lora_layers(model)), 0.0)
    config = peft_config_for(model, entries, base_model_name_or_path=base_model_name_or_path, revision=revision,
                             lora_dropout=dropout)
    tensors = peft_tensors_for(entries)
    fused = {e.name: e.fused_from for e in entries if e.fused_from is not None}
    metadata = {"format": "pt"}
    if fused:
        metadata[FUSED_METADATA_KEY] = json.dumps(fused, sort_keys=True)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PhiModelError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(out / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


# ---- reading --------------------------------------------------------------------------------


def read_peft_dir(adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(adapter_config, tensors, safetensors metadata) of a PEFT adapter directory, checked to be readable."""
    directory = Path(adapter_dir)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise PhiModelError(f"{directory}: not a PEFT adapter directory (no {CONFIG_NAME})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PhiModelError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise PhiModelError(f"{config_path}: expected a JSON object")
    weights = directory / WEIGHTS_NAME
    metadata: dict = {}
    if weights.is_file():
        from safetensors import safe_open
        try:
            with safe_open(str(weights), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise PhiModelError(f"{weights}: not a readable safetensors file ({err})") from None
    elif (directory / LEGACY_WEIGHTS_NAME).is_file():
        legacy = directory / LEGACY_WEIGHTS_NAME
        try:
            tensors = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as err:
            raise PhiModelError(f"{legacy}: not a weights-only torch file ({err})") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise PhiModelError(f"{legacy}: does not hold a dict of tensors")
    else:
        raise PhiModelError(f"{directory}: no {WEIGHTS_NAME} (or {LEGACY_WEIGHTS_NAME}) next to {CONFIG_NAME}")
    return config, tensors, metadata


def check_peft_config(config: dict, model: nn.Module, source: str) -> None:
    """Refuse PEFT options we cannot reproduce exactly, and target modules the model does not have."""
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise PhiModelError(f"{source}: peft_type {config.get('peft_type')!r} is not supported; philora loads LoRA "
                            f"adapters (peft_type 'LORA') only")
    for key in _UNSUPPORTED_OPTIONS:
        if config.get(key):
            raise PhiModelError(f"{source}: option {key}={config[key]!r} is not supported by philora; "
                                f"the adapter cannot be represented exactly")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise PhiModelError(f"{source}: init_lora_weights={init!r} also changes the base weights; convert the adapter "
                            f"to plain LoRA with PEFT first (save_pretrained(path_initial_model_for_weight_conversion=...))")
    if config.get("bias", "none") not in (None, "none"):
        raise PhiModelError(f"{source}: bias={config['bias']!r} (trained biases) is not supported; only bias='none'")
    _check_targets(config.get("target_modules"), model, source)


def _check_targets(targets, model: nn.Module, source: str) -> None:
    import re

    names = hf_module_names(model)
    aliases = getattr(model, "lora_target_aliases", {}) or {}
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise PhiModelError(f"{source}: target_modules regex {targets!r} matches no module of this "
                                f"{model.config.model_type} model")
        return
    leaves = sorted({n.rpartition(".")[2] for n in names})
    for target in targets or []:
        leaf = target.rpartition(".")[2]
        wanted = target if leaf not in aliases else target[: len(target) - len(leaf)] + aliases[leaf]
        if leaf in aliases:
            continue  # a legacy name (Wqkv, out_proj) of a module the model has
        if not any(n == wanted or n.endswith("." + wanted) for n in names):
            raise PhiModelError(f"{source}: target_modules entry {target!r} does not exist in a "
                                f"{model.config.model_type} model (its modules: {', '.join(leaves)}); "
                                f"the adapter was made for another architecture or module naming")


# ---- import plan ----------------------------------------------------------------------------


@dataclass
class ModulePlan:
    """LoRA to create on one of our modules, and the tensors to put in it."""

    module: str
    targets: list[str]  # names for lora_core.inject: the module, or virtual slice names
    r: int
    alpha: float
    use_dora: bool
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    magnitude: torch.Tensor | None = None


def _parts(parsed, source: str):
    parts = parsed.parts
    a = parts.get("lora_A", parts.get("lora_embedding_A"))
    b = parts.get("lora_B", parts.get("lora_embedding_B"))
    if a is None or b is None:
        raise PhiModelError(f"{source}: module {parsed.name!r} has {'lora_B' if a is None else 'lora_A'} "
                            f"but not {'lora_A' if a is None else 'lora_B'}")
    return a, b, parts.get("magnitude")


def _check_shape(source: str, key: str, got: torch.Size, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise PhiModelError(f"{source}: tensor {key!r} has shape {list(got)} but this model needs {list(want)}; "
                            f"the adapter was trained for another base model")


def plan_import(model: nn.Module, config: dict, tensors: dict[str, torch.Tensor], metadata: dict,
                source: str) -> tuple[list[ModulePlan], dict[str, torch.Tensor]]:
    """Our LoRA layers for a PEFT adapter (checked against the model), and modules_to_save tensors by our name."""
    check_peft_config(config, model, source)
    parsed, others = parse_peft_tensors(tensors, source)
    if not parsed:
        raise PhiModelError(f"{source}: the adapter holds no LoRA tensors")
    rslora = bool(config.get("use_rslora"))
    r_default, alpha_default = config.get("r", 8), config.get("lora_alpha", 8)
    fused = json.loads(metadata.get(FUSED_METADATA_KEY, "{}") or "{}")
    groups: dict[str, list] = {}
    for name, entry in parsed.items():
        a, b, mag = _parts(entry, source)
        r = int(a.shape[0])
        pattern_r = pattern_value(config.get("rank_pattern"), name, r_default)
        if int(pattern_r) != r:
            raise PhiModelError(f"{source}: module {name!r} has rank {r} in the weights but {pattern_r} in "
                                f"adapter_config.json (r / rank_pattern)")
        alpha = float(pattern_value(config.get("alpha_pattern"), name, alpha_default))
        module_name, slot = our_target(model, name, source)
        groups.setdefault(module_name, []).append((slot, name, a, b, mag, r, alpha))
    plans = [_plan_module(model, module_name, items, rslora, fused, source) for module_name, items in groups.items()]
    modules_to_save = _plan_modules_to_save(model, config, others, source)
    return plans, modules_to_save


def _out_in(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Embedding):
        return module.embedding_dim, module.num_embeddings
    return module.out_features, module.in_features


def _plan_module(model, module_name, items, rslora, fused, source) -> ModulePlan:
    from lora_core import virtual_slice_name

    module = model.get_submodule(module_name)
    out_features, in_features = _out_in(module)
    if items[0][0] is None:  # a PEFT adapter on the module itself
        (_, name, a, b, mag, r, alpha), = items
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_A.weight", a.shape, (r, in_features))
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_B.weight", b.shape, (out_features, r))
        if mag is not None:
            _check_shape(source, f"{PEFT_PREFIX}{name}.lora_magnitude_vector", mag.shape, (out_features,))
        hint = fused.get(name)
        if hint and mag is None:
            plan = _unstack(module, module_name, hint, a, b, r, alpha, rslora)
            if plan is not None:
                return plan
        return ModulePlan(module_name, [module_name], r, alpha, mag is not None, a, b, mag)
    # phi-1.5/2: separate q/k/v adapters onto our fused qkv_proj
    slices = dict(module.lora_slices)
    by_slot = {slot: item for slot, *item in items}
    ordered = [slot for slot in slices if slot in by_slot]
    for slot in ordered:
        name, a, b, mag, r, _ = by_slot[slot]
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_A.weight", a.shape, (r, in_features))
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_B.weight", b.shape, (slices[slot], r))
        if mag is not None:
            _check_shape(source, f"{PEFT_PREFIX}{name}.lora_magnitude_vector", mag.shape, (slices[slot],))
    settings = {(by_slot[s][4], by_slot[s][5]) for s in ordered}
    use_dora = any(by_slot[s][3] is not None for s in ordered)
    shared_A = len(ordered) == len(slices) and all(torch.equal(by_slot[s][1], by_slot[ordered[0]][1]) for s in ordered)
    if len(settings) == 1 and shared_A and all((by_slot[s][3] is not None) == use_dora for s in ordered):
        # q, k and v share one A: a single adapter on the whole fused module (what philora exports it from)
        r, alpha = settings.pop()
        magnitude = torch.cat([by_slot[s][3] for s in ordered]) if use_dora else None
        return ModulePlan(module_name, [module_name], r, alpha, use_dora, by_slot[ordered[0]][1],
                          torch.cat([by_slot[s][2] for s in ordered]), magnitude)
    if len(settings) == 1 and not use_dora:  # one rank and alpha: our per-slice layer, bit for bit
        r, alpha = settings.pop()
        return ModulePlan(module_name, [virtual_slice_name(module_name, s) for s in ordered], r, alpha, False,
                          torch.cat([by_slot[s][1] for s in ordered]), torch.cat([by_slot[s][2] for s in ordered]))
    return _stack_slices(module, module_name, slices, by_slot, ordered, rslora, use_dora)


def _stack_slices(module, module_name, slices, by_slot, ordered, rslora, use_dora) -> ModulePlan:
    """Slices with different ranks/alphas, or DoRA: one whole-module adapter of rank sum(r), stacked A,
    block B with each block rescaled to the common scaling (exact up to rounding)."""
    first = by_slot[ordered[0]]
    common = scaling(first[5], first[4], rslora)
    total_r = sum(by_slot[s][4] for s in ordered)
    alpha = common * (math.sqrt(total_r) if rslora else total_r)
    A = torch.cat([by_slot[s][1].float() for s in ordered])  # (sum r, in)
    B = torch.zeros(module.out_features, total_r)
    magnitude = torch.empty(module.out_features) if use_dora else None
    row, col = 0, 0
    for slot, size in slices.items():
        if slot in by_slot:
            _, _, b, mag, r, slot_alpha = by_slot[slot]
            B[row:row + size, col:col + r] = b.float() * (scaling(slot_alpha, r, rslora) / common)
            if magnitude is not None:
                magnitude[row:row + size] = mag.float() if mag is not None else _row_norms(module, row, size)
            col += r
        elif magnitude is not None:  # no adapter on this slice: magnitude = ||W|| leaves its rows unchanged
            magnitude[row:row + size] = _row_norms(module, row, size)
        row += size
    return ModulePlan(module_name, [module_name], total_r, alpha, use_dora, A, B, magnitude)


def _row_norms(module, start: int, size: int) -> torch.Tensor:
    weight = module.weight.detach()[start:start + size].float()
    return weight.norm(p=2, dim=1)


def _unstack(module, module_name, hint, a, b, r_fused, alpha_fused, rslora) -> ModulePlan | None:
    """A stacked adapter that philora exported from per-slice layers: rebuild those layers exactly,
    after checking that B really is zero outside its diagonal blocks."""
    from lora_core import virtual_slice_name

    slices = dict(getattr(module, "lora_slices", None) or {})
    r, names = int(hint.get("r", 0)), list(hint.get("slices", []))
    if not slices or not names or any(n not in slices for n in names) or r * len(names) != r_fused:
        return None
    if not math.isclose(scaling(float(hint["lora_alpha"]), r, rslora), scaling(alpha_fused, r_fused, rslora)):
        return None
    blocks, row, group = [], 0, 0
    for name, size in slices.items():
        rows = b[row:row + size]
        if name in names:
            block = rows[:, group * r:(group + 1) * r]
            others = torch.cat([rows[:, :group * r], rows[:, (group + 1) * r:]], dim=1)
            if others.numel() and bool(others.ne(0).any()):
                return None
            blocks.append(block)
            group += 1
        elif bool(rows.ne(0).any()):
            return None
        row += size
    return ModulePlan(module_name, [virtual_slice_name(module_name, n) for n in names], r, float(hint["lora_alpha"]),
                      False, a, torch.cat(blocks))


def _plan_modules_to_save(model, config, others, source) -> dict[str, torch.Tensor]:
    wanted = config.get("modules_to_save") or []
    if not others:
        if wanted:
            raise PhiModelError(f"{source}: modules_to_save={wanted} but the file holds no weights for them")
        return {}
    if not wanted:
        key = next(iter(others))
        raise PhiModelError(f"{source}: unexpected tensor {PEFT_PREFIX}{key!r} (not LoRA, and modules_to_save is empty)")
    own = dict(model.named_parameters())
    out = {}
    for key, value in others.items():
        target = our_target(model, key.rpartition(".")[0], source)
        name = f"{target[0]}.{key.rpartition('.')[2]}"
        if target[1] is not None or name not in own:
            raise PhiModelError(f"{source}: modules_to_save tensor {key!r} has no exact counterpart in this model")
        _check_shape(source, PEFT_PREFIX + key, value.shape, tuple(own[name].shape))
        out[name] = value
    return out


# ---- import ---------------------------------------------------------------------------------


def load_peft_adapter(model: nn.Module, adapter_dir: str | Path, *, lora_dropout: float | None = None) -> dict:
    """Load a PEFT LoRA adapter directory into ``model``, creating the LoRA layers it needs.

    Logits then equal PEFT's on the transformers model. Refuses (PhiModelError naming the key or option)
    what cannot be represented exactly. Returns the adapter config recorded on the model
    (``model.lora_core_config``), which lets ``lora_core.save_adapter`` files be re-attached.
    """
    import lora_core

    source = str(adapter_dir)
    config, tensors, metadata = read_peft_dir(adapter_dir)
    plans, saved = plan_import(model, config, tensors, metadata, source)
    rslora = bool(config.get("use_rslora"))
    dropout = float(config.get("lora_dropout") or 0.0) if lora_dropout is None else lora_dropout
    previous = getattr(model, "lora_core_config", None)
    if previous and previous.get("adapted"):
        raise PhiModelError(f"{source}: the model already has LoRA layers ({', '.join(previous['adapted'][:3])} ...); "
                            f"load a PEFT adapter into a model without LoRA")
    modules = {}
    for plan in plans:
        lora_core.inject(model, targets=plan.targets, r=plan.r, lora_alpha=plan.alpha, lora_dropout=dropout,
                         use_rslora=rslora, use_dora=plan.use_dora)
        layer = model.get_submodule(plan.module)
        with torch.no_grad():
            layer.lora_A.copy_(plan.lora_A)
            layer.lora_B.copy_(plan.lora_B)
            if plan.magnitude is not None:
                layer.lora_magnitude_vector.copy_(plan.magnitude)
        modules[plan.module] = {"targets": plan.targets, "r": plan.r, "lora_alpha": plan.alpha,
                                "use_dora": plan.use_dora}
    with torch.no_grad():
        own = dict(model.named_parameters())
        for name, value in saved.items():
            own[name].copy_(value)
    if saved:
        for name in saved:
            own[name].requires_grad_(False)
    adapted = [t for plan in plans for t in plan.targets]
    record = {
        "r": int(config.get("r", plans[0].r)), "lora_alpha": config.get("lora_alpha", plans[0].alpha),
        "lora_dropout": dropout, "targets": adapted, "exclude": None, "use_rslora": rslora,
        "use_dora": any(p.use_dora for p in plans), "adapted": adapted, "modules": modules,
        "imported_from": {"peft_dir": source, "base_model_name_or_path": config.get("base_model_name_or_path")},
    }
    if saved:
        record["modules_to_save"] = sorted(saved)
    model.lora_core_config = record
    return record
