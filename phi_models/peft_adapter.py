"""PEFT adapter directories for Phi models, both ways: ``export_peft_adapter`` and ``load_peft_adapter``.

The files are read and written by ``lora_core.peft_files`` (config checks, PEFT keys <-> per-module parts);
the Phi name and tensor mapping lives in ``peft_keys`` (pure functions); this module adds the Phi-specific
checks, plans our LoRA layers, creates them with one ``lora_core.inject`` call and moves the tensors.
What cannot be represented exactly is refused with a PhiModelError naming the key or option, never ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from phi_models.errors import PhiModelError
from phi_models.peft_keys import (
    hf_module_names,
    lora_modules_to_peft,
    our_target,
    peft_config_for,
    peft_parts_for,
    scaling,
)

PEFT_PREFIX = "base_model.model."
# init_lora_weights values that also rewrite the base weights (the adapter alone is not the model).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


# ---- export ----------------------------------------------------------------------------------


def export_peft_adapter(
    model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None, revision: str | None = None
) -> Path:
    """Write ``model``'s LoRA as a PEFT adapter directory (adapter_config.json + adapter_model.safetensors).

    ``peft.PeftModel.from_pretrained(<transformers model of the same checkpoint>, out_dir)`` then gives our
    logits. Files are written atomically; returns ``out_dir``.
    """
    from lora_core import LoRAError, join_peft_tensors, lora_layers, write_peft_dir

    entries = lora_modules_to_peft(model)
    dropout = next((float(getattr(layer.lora_dropout, "p", 0.0)) for layer in lora_layers(model)), 0.0)
    config = peft_config_for(
        model, entries, base_model_name_or_path=base_model_name_or_path, revision=revision, lora_dropout=dropout
    )
    out = Path(out_dir)
    try:
        write_peft_dir(out, config, join_peft_tensors(peft_parts_for(entries), prefix=PEFT_PREFIX))
    except LoRAError as err:
        raise PhiModelError(str(err)) from None
    return out


# ---- reading --------------------------------------------------------------------------------


def check_phi_peft_config(config: dict, model: nn.Module, source: str) -> None:
    """On top of lora_core.check_peft_config: refuse what a Phi model cannot reproduce exactly, and target
    modules the model does not have."""
    if config.get("fan_in_fan_out"):
        raise PhiModelError(
            f"{source}: fan_in_fan_out=True is for GPT-2 Conv1D weights; Phi's Linear layers store "
            f"(out, in), so the adapter was not made for a Phi model"
        )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise PhiModelError(
            f"{source}: init_lora_weights={init!r} also changes the base weights; convert the "
            f"adapter to plain LoRA with PEFT first "
            f"(save_pretrained(path_initial_model_for_weight_conversion=...))"
        )
    if config.get("bias", "none") not in (None, "none"):
        raise PhiModelError(f"{source}: bias={config['bias']!r} (trained biases) is not supported; only bias='none'")
    _check_targets(config.get("target_modules"), model, source)


def _check_targets(targets, model: nn.Module, source: str) -> None:
    import re

    names = hf_module_names(model)
    aliases = getattr(model, "lora_target_aliases", {}) or {}
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise PhiModelError(
                f"{source}: target_modules regex {targets!r} matches no module of this {model.config.model_type} model"
            )
        return
    leaves = sorted({n.rpartition(".")[2] for n in names})
    for target in targets or []:
        leaf = target.rpartition(".")[2]
        wanted = target if leaf not in aliases else target[: len(target) - len(leaf)] + aliases[leaf]
        if leaf in aliases:
            continue  # a legacy name (Wqkv, out_proj) of a module the model has
        if not any(n == wanted or n.endswith("." + wanted) for n in names):
            raise PhiModelError(
                f"{source}: target_modules entry {target!r} does not exist in a "
                f"{model.config.model_type} model (its modules: {', '.join(leaves)}); "
                f"the adapter was made for another architecture or module naming"
            )


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


def _parts(name: str, parts: dict, source: str):
    a = parts.get("lora_A", parts.get("lora_embedding_A"))
    b = parts.get("lora_B", parts.get("lora_embedding_B"))
    return a, b, parts.get("lora_magnitude_vector")


def _check_shape(source: str, key: str, got: torch.Size, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise PhiModelError(
            f"{source}: tensor {key!r} has shape {list(got)} but this model needs {list(want)}; "
            f"the adapter was trained for another base model"
        )


def plan_import(
    model: nn.Module, config: dict, tensors: dict[str, torch.Tensor], source: str
) -> tuple[list[ModulePlan], dict[str, torch.Tensor]]:
    """Our LoRA layers for a PEFT adapter (checked against the model), and modules_to_save tensors by our name."""
    from lora_core import peft_module_rank_alpha, split_peft_tensors

    check_phi_peft_config(config, model, source)
    parsed, others = split_peft_tensors(tensors, PEFT_PREFIX)
    if not parsed:
        raise PhiModelError(f"{source}: the adapter holds no LoRA tensors")
    rslora = bool(config.get("use_rslora"))
    groups: dict[str, list] = {}
    for name, parts in parsed.items():
        a, b, mag = _parts(name, parts, source)
        r = int(a.shape[0])
        pattern_r, alpha = peft_module_rank_alpha(config, name)
        if int(pattern_r) != r:
            raise PhiModelError(
                f"{source}: module {name!r} has rank {r} in the weights but {pattern_r} in "
                f"adapter_config.json (r / rank_pattern)"
            )
        module_name, slot = our_target(model, name, source)
        groups.setdefault(module_name, []).append((slot, name, a, b, mag, r, float(alpha)))
    plans = [_plan_module(model, module_name, items, rslora, source) for module_name, items in groups.items()]
    modules_to_save = _plan_modules_to_save(model, config, others, source)
    return plans, modules_to_save


def _out_in(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Embedding):
        return module.embedding_dim, module.num_embeddings
    return module.out_features, module.in_features


def _plan_module(model, module_name, items, rslora, source) -> ModulePlan:
    from lora_core import virtual_slice_name

    module = model.get_submodule(module_name)
    out_features, in_features = _out_in(module)
    if items[0][0] is None:  # a PEFT adapter on the module itself
        ((_, name, a, b, mag, r, alpha),) = items
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_A.weight", a.shape, (r, in_features))
        _check_shape(source, f"{PEFT_PREFIX}{name}.lora_B.weight", b.shape, (out_features, r))
        if mag is not None:
            _check_shape(source, f"{PEFT_PREFIX}{name}.lora_magnitude_vector", mag.shape, (out_features,))
        if mag is None and getattr(module, "lora_slices", None):
            plan = _unstack(module, module_name, a, b, r, alpha, rslora)
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
        return ModulePlan(
            module_name,
            [module_name],
            r,
            alpha,
            use_dora,
            by_slot[ordered[0]][1],
            torch.cat([by_slot[s][2] for s in ordered]),
            magnitude,
        )
    if len(settings) == 1 and not use_dora:  # one rank and alpha: our per-slice layer, bit for bit
        r, alpha = settings.pop()
        return ModulePlan(
            module_name,
            [virtual_slice_name(module_name, s) for s in ordered],
            r,
            alpha,
            False,
            torch.cat([by_slot[s][1] for s in ordered]),
            torch.cat([by_slot[s][2] for s in ordered]),
        )
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
            B[row : row + size, col : col + r] = b.float() * (scaling(slot_alpha, r, rslora) / common)
            if magnitude is not None:
                magnitude[row : row + size] = mag.float() if mag is not None else _row_norms(module, row, size)
            col += r
        elif magnitude is not None:  # no adapter on this slice: magnitude = ||W|| leaves its rows unchanged
            magnitude[row : row + size] = _row_norms(module, row, size)
        row += size
    return ModulePlan(module_name, [module_name], total_r, alpha, use_dora, A, B, magnitude)


def _row_norms(module, start: int, size: int) -> torch.Tensor:
    weight = module.weight.detach()[start : start + size].float()
    return weight.norm(p=2, dim=1)


def _unstack(module, module_name, a, b, r_fused, alpha_fused, rslora) -> ModulePlan | None:
    """A fused adapter whose B is block-diagonal over the module's slices, with equal blocks (what
    export_peft_adapter writes for per-slice layers): those per-slice layers again, bit for bit.
    None when B is not laid out so (e.g. trained by PEFT on the fused module, or all zero)."""
    from lora_core import virtual_slice_name

    slices = list(module.lora_slices.items())
    owners, row = [], 0
    bounds = []
    for _index, (_, size) in enumerate(slices):
        bounds.append((row, row + size))
        row += size
    nonzero = b.ne(0)  # (out, r_fused)
    for column in range(r_fused):
        hits = [i for i, (lo, hi) in enumerate(bounds) if bool(nonzero[lo:hi, column].any())]
        if len(hits) != 1:
            return None
        owners.append(hits[0])
    if owners != sorted(owners):
        return None
    enabled = sorted(set(owners))
    r = r_fused // len(enabled)
    if any(owners.count(i) != r for i in enabled):
        return None
    n = len(enabled)
    alpha = alpha_fused / (math.sqrt(n) if rslora else n)
    alpha = float(f"{alpha:.12g}")  # undo the float error of alpha * sqrt(n) (the user's alpha is a short decimal)
    if not math.isclose(scaling(alpha, r, rslora), scaling(alpha_fused, r_fused, rslora), rel_tol=1e-12):
        return None
    blocks = [b[bounds[i][0] : bounds[i][1], g * r : (g + 1) * r] for g, i in enumerate(enabled)]
    names = [slices[i][0] for i in enabled]
    return ModulePlan(
        module_name, [virtual_slice_name(module_name, name) for name in names], r, alpha, False, a, torch.cat(blocks)
    )


def _plan_modules_to_save(model, config, others, source) -> dict[str, torch.Tensor]:
    wanted = config.get("modules_to_save") or []
    if not others:
        if wanted:
            raise PhiModelError(f"{source}: modules_to_save={wanted} but the file holds no weights for them")
        return {}
    if not wanted:
        key = next(iter(others))
        raise PhiModelError(
            f"{source}: unexpected tensor {PEFT_PREFIX}{key!r} (not LoRA, and modules_to_save is empty)"
        )
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
    import re

    import lora_core
    from lora_core import LoRAError

    source = str(adapter_dir)
    previous = getattr(model, "lora_core_config", None)
    if previous and previous.get("adapted"):
        raise PhiModelError(
            f"{source}: the model already has LoRA layers ({', '.join(previous['adapted'][:3])} ...); "
            f"load a PEFT adapter into a model without LoRA"
        )
    try:
        config, tensors = lora_core.read_peft_dir(adapter_dir)
        plans, saved = plan_import(model, config, tensors, source)
        dropout = float(config.get("lora_dropout") or 0.0) if lora_dropout is None else lora_dropout
        targets = [t for plan in plans for t in plan.targets]
        lora_core.inject(
            model,
            "|".join(re.escape(t) for t in targets),
            r=int(config["r"]),
            lora_alpha=config.get("lora_alpha", 8),
            lora_dropout=dropout,
            rank_pattern={re.escape(t): p.r for p in plans for t in p.targets},
            alpha_pattern={re.escape(t): p.alpha for p in plans for t in p.targets},
            use_rslora=bool(config.get("use_rslora")),
            use_dora=any(p.use_dora for p in plans),
        )
    except LoRAError as err:
        raise PhiModelError(str(err)) from None
    with torch.no_grad():
        for plan in plans:
            layer = model.get_submodule(plan.module)
            layer.lora_A.copy_(plan.lora_A)
            layer.lora_B.copy_(plan.lora_B)
            if plan.magnitude is not None:
                layer.lora_magnitude_vector.copy_(plan.magnitude)
        own = dict(model.named_parameters())
        for name, value in saved.items():
            own[name].copy_(value)
            own[name].requires_grad_(False)
    record = model.lora_core_config
    record["imported_from"] = {"peft_dir": source, "base_model_name_or_path": config.get("base_model_name_or_path")}
    if saved:
        record["modules_to_save"] = sorted(saved)
    return dict(record)
