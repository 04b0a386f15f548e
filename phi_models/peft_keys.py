"""Pure mapping between our Phi LoRA layers and PEFT adapter modules (no files, no model changes).

PEFT sees the transformers module tree. It equals ours except that phi-1.5/2 have separate
``q_proj``/``k_proj``/``v_proj`` where we have one fused ``qkv_proj`` (with ``lora_slices``):

- ours -> PEFT, phi: a per-slice adapter becomes one PEFT adapter per enabled slice; a whole-module adapter
  on the fused qkv becomes three adapters that share A and take B's row blocks (DoRA magnitudes split by row).
- ours -> PEFT, Phi-3 family: per-slice adapters on ``qkv_proj``/``gate_up_proj`` become one PEFT adapter on
  the fused module: A stacked (r*n, in), B block-diagonal (out, r*n), rank r*n and alpha chosen so the
  scaling is unchanged (alpha*n, or alpha*sqrt(n) with rsLoRA); disabled slices are zero blocks.
- PEFT -> ours: the reverse, plus legacy phi-msft / MixFormer module paths (``Wqkv``, ``out_proj``) through
  ``phi_models.keymap.map_key``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from phi_models.errors import PhiModelError
from phi_models.keymap import map_key


@dataclass
class PeftModule:
    """One PEFT LoRA adapter on module ``name`` (transformers path): factors, rank, alpha, optional DoRA magnitude."""

    name: str
    lora_A: torch.Tensor  # (r, in) (Embedding: (r, num_embeddings))
    lora_B: torch.Tensor  # (out, r) (Embedding: (dim, r))
    r: int
    alpha: float
    magnitude: torch.Tensor | None = None
    embedding: bool = False


def scaling(alpha: float, r: int, use_rslora: bool) -> float:
    """PEFT's (and lora_core's) scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / (math.sqrt(r) if use_rslora else r)


def is_phi_fused_qkv(model: nn.Module, name: str) -> bool:
    """True for a phi-1.5/2 ``qkv_proj``, which transformers stores as three separate modules."""
    return model.config.model_type == "phi" and name.endswith("self_attn.qkv_proj")


def _slice_names(layer: nn.Module) -> list[tuple[str, int]]:
    slices = getattr(layer, "lora_slices", None)
    if not slices:
        raise PhiModelError(f"{type(layer).__name__} has no lora_slices; cannot name its PEFT modules")
    return list(slices.items())


def _sibling(name: str, leaf: str) -> str:
    parent = name.rpartition(".")[0]
    return f"{parent}.{leaf}" if parent else leaf


def lora_modules_to_peft(model: nn.Module) -> list[PeftModule]:
    """Every LoRA layer of ``model`` as PEFT modules on transformers names (exact, see module docstring)."""
    from lora_core import Embedding, LoRALayer, MergedLinear
    from lora_core.merged import block_lora_B

    out: list[PeftModule] = []
    for name, layer in model.named_modules():
        if not isinstance(layer, LoRALayer) or not layer.has_lora():
            continue
        A, B = layer.lora_A.detach(), layer.lora_B.detach()
        r, alpha, rslora = layer.r, float(layer.lora_alpha), layer.use_rslora
        magnitude = layer.lora_magnitude_vector.detach() if getattr(layer, "use_dora", False) else None
        if isinstance(layer, Embedding):
            out.append(PeftModule(name, A, B, r, alpha, embedding=True))
        elif hasattr(layer, "_enabled_spans"):  # per-slice adapter on a fused module
            # MergedLinear's method also serves the 4-bit fused class, which has the same slice attributes
            info = [s for s in MergedLinear.slice_info(layer) if s["enabled"]]
            if is_phi_fused_qkv(model, name):
                for s in info:
                    a0, a1 = s["lora_A_rows"]
                    b0, b1 = s["lora_B_rows"]
                    out.append(PeftModule(_sibling(name, s["name"]), A[a0:a1], B[b0:b1], r, alpha))
            else:
                n = len(info)
                fused_alpha = alpha * (math.sqrt(n) if rslora else n)  # keeps alpha/r (or alpha/sqrt r) unchanged
                out.append(PeftModule(name, A, block_lora_B(layer).detach(), r * n, fused_alpha))
        elif is_phi_fused_qkv(model, name):  # one adapter on the whole fused qkv: share A, split B by rows
            start = 0
            for slot, size in _slice_names(layer):
                mag = magnitude[start : start + size] if magnitude is not None else None
                out.append(PeftModule(_sibling(name, slot), A, B[start : start + size], r, alpha, magnitude=mag))
                start += size
        else:
            out.append(PeftModule(name, A, B, r, alpha, magnitude=magnitude))
    return out


def hf_module_names(model: nn.Module) -> list[str]:
    """The transformers names of the model's Linear/Embedding modules (phi q/k/v as three names)."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Embedding)) or not name:
            continue
        if is_phi_fused_qkv(model, name):
            names.extend(_sibling(name, slot) for slot, _ in _slice_names(module))
        else:
            names.append(name)
    return names


def _pattern_keys(entries: list[PeftModule], value_of, default, all_names: list[str]) -> dict:
    """rank_pattern / alpha_pattern: a bare leaf name where every module with that leaf shares the value,
    else an escaped full name per module (PEFT matches keys as regexes against the module-name suffix)."""
    by_leaf: dict[str, list[PeftModule]] = {}
    for entry in entries:
        by_leaf.setdefault(entry.name.rpartition(".")[2], []).append(entry)
    pattern = {}
    for leaf, group in by_leaf.items():
        values = {value_of(e) for e in group}
        every_module = sum(1 for n in all_names if n.rpartition(".")[2] == leaf) == len(group)
        if len(values) == 1 and every_module:
            value = values.pop()
            if value != default:
                pattern[leaf] = value
            continue
        for entry in group:
            if value_of(entry) != default:
                pattern[re.escape(entry.name)] = value_of(entry)
    return pattern


def peft_config_for(
    model: nn.Module,
    entries: list[PeftModule],
    *,
    base_model_name_or_path: str | None,
    revision: str | None = None,
    lora_dropout: float = 0.0,
) -> dict:
    """adapter_config.json content for ``entries`` (only fields PEFT has had for long; see lora-landscape §2.3)."""
    from lora_core import lora_layers

    if not entries:
        raise PhiModelError("the model has no LoRA layers to export; add LoRA first")
    all_names = hf_module_names(model)
    r = Counter(e.r for e in entries).most_common(1)[0][0]
    alpha = Counter(e.alpha for e in entries).most_common(1)[0][0]
    layers = [layer for layer in lora_layers(model) if layer.has_lora()]
    use_rslora = any(layer.use_rslora for layer in layers)
    if use_rslora and not all(layer.use_rslora for layer in layers):
        raise PhiModelError("the model mixes rsLoRA and plain LoRA layers; PEFT's use_rslora is one setting for all")
    leaves = {e.name.rpartition(".")[2] for e in entries}
    adapted = {e.name for e in entries}
    if all(n in adapted for n in all_names if n.rpartition(".")[2] in leaves):
        targets = sorted(leaves)
    else:
        targets = sorted(adapted)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": revision,
        "inference_mode": True,
        "r": int(r),
        "lora_alpha": alpha,
        "lora_dropout": float(lora_dropout),
        "target_modules": targets,
        "rank_pattern": _pattern_keys(entries, lambda e: int(e.r), r, all_names),
        "alpha_pattern": _pattern_keys(entries, lambda e: e.alpha, alpha, all_names),
        "use_rslora": use_rslora,
        "use_dora": any(e.magnitude is not None for e in entries),
        "fan_in_fan_out": False,
        "bias": "none",
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def peft_parts_for(entries: list[PeftModule]) -> dict[str, dict[str, torch.Tensor]]:
    """{PEFT module name: {part: tensor}} for ``lora_core.join_peft_tensors`` (PEFT's key names)."""
    modules = {}
    for e in entries:
        if e.embedding:
            parts = {"lora_embedding_A": e.lora_A, "lora_embedding_B": e.lora_B}
        else:
            parts = {"lora_A": e.lora_A, "lora_B": e.lora_B}
        if e.magnitude is not None:
            parts["lora_magnitude_vector"] = e.magnitude
        modules[e.name] = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in parts.items()}
    return modules


# ---- PEFT -> ours -------------------------------------------------------------------------------


def our_target(model: nn.Module, peft_name: str, source: str) -> tuple[str, str | None]:
    """(our module name, slice or None) for a PEFT module path (HF-native, phi-msft or MixFormer names)."""
    target = map_key(f"{peft_name}.weight", model.config)
    if target is None or not target.name.endswith(".weight"):
        raise PhiModelError(f"{source}: module {peft_name!r} is not a module of this {model.config.model_type} model")
    module_name = target.name[: -len(".weight")]
    try:
        model.get_submodule(module_name)
    except AttributeError:
        raise PhiModelError(
            f"{source}: module {peft_name!r} is not a module of this {model.config.model_type} "
            f"model with {model.config.num_hidden_layers} layers"
        ) from None
    return module_name, target.slot
