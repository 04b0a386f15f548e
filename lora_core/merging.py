"""Model-level merging: merge/unmerge every LoRA layer, disable adapters, or bake LoRA in for good."""

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from lora_core.adapters import check_adapter_names
from lora_core.base import LoRALayer
from lora_core.layers import ConvLoRA

_LORA_ATTRIBUTES = (
    "r",
    "lora_alpha",
    "merged",
    "merge_weights",
    "use_rslora",
    "use_dora",
    "adapters_disabled",
    "_weight_before_merge",
    "scaling",
    "fan_in_fan_out",
    "enable_lora",
    "slice_sizes",
    "_enabled_spans",
    "active_adapters",
    "merged_adapters",
)


def lora_layers(model: nn.Module) -> list[LoRALayer]:
    """Every LoRA layer in `model` (the model itself included)."""
    return [m for m in model.modules() if isinstance(m, LoRALayer)]


def merge(model: nn.Module, adapter_names: Sequence[str] | None = None) -> int:
    """Fold the active LoRA updates (or just the adapters named in `adapter_names`) into their base
    weights, exactly reversible by `unmerge`; forward then costs no more than the base model.
    Returns the number of layers whose weight changed."""
    if adapter_names is not None:
        adapter_names = check_adapter_names(model, adapter_names)
    count = 0
    for layer in lora_layers(model):
        before = len(layer.merged_adapters)
        layer.merge(adapter_names)
        count += int(len(layer.merged_adapters) > before)
    return count


def unmerge(model: nn.Module) -> int:
    """Restore every merged base weight bit-exactly. Returns the number of layers unmerged."""
    count = 0
    for layer in lora_layers(model):
        count += int(layer.merged)
        layer.unmerge()
    return count


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model computes its base outputs (merged layers are unmerged for the
    duration and merged again afterwards)."""
    layers = lora_layers(model)
    state = [(layer, layer.merged, list(layer.merged_adapters), layer.adapters_disabled) for layer in layers]
    for layer in layers:
        layer.unmerge()
        layer.adapters_disabled = True
    try:
        yield model
    finally:
        for layer, was_merged, merged_names, was_disabled in state:
            layer.adapters_disabled = was_disabled
            if was_merged:
                layer.merge(merged_names or None)


def _dense_merged_weight(layer: LoRALayer, dtype: torch.dtype | None) -> torch.Tensor:
    with torch.no_grad():
        base = layer.dense_weight()
        if dtype is not None:
            base = base.to(dtype)
        if layer.adapters_disabled or not layer._resolve_merge_names(None):
            return base.clone()
        return layer.merged_weight(base)


def _plain_module(layer: LoRALayer, weight: torch.Tensor) -> nn.Module:
    """A plain torch module with the layer's structure and `weight`, without LoRA."""
    if isinstance(layer, ConvLoRA):
        conv = layer.conv
        conv.weight = nn.Parameter(weight, requires_grad=False)
        return conv
    if hasattr(layer, "dequantized_weight"):  # 4-bit base -> dense nn.Linear
        dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        dense.weight = nn.Parameter(weight, requires_grad=False)
        if layer.bias is not None:
            dense.bias = nn.Parameter(layer.bias.data.to(weight.dtype), requires_grad=layer.bias.requires_grad)
        if hasattr(layer, "lora_slices"):
            dense.lora_slices = dict(layer.lora_slices)
        return dense
    plain_class = getattr(layer, "plain_class", None)
    base_cls = (
        plain_class() if plain_class else next(c for c in type(layer).__mro__ if c.__module__.startswith("torch.nn"))
    )
    plain = object.__new__(base_cls)
    state = dict(layer.__dict__)
    state["_parameters"] = {k: v for k, v in layer._parameters.items() if not k.startswith("lora_")}
    state["_modules"] = {k: v for k, v in layer._modules.items() if k not in ("lora_dropout", "lora_adapters")}
    for attribute in _LORA_ATTRIBUTES:
        state.pop(attribute, None)
    plain.__dict__.update(state)
    for attribute in ("in_features", "out_features") if plain_class else ():
        state.pop(attribute, None)  # set by lora_core on Conv1D, not Conv1D's own
    if getattr(layer, "fan_in_fan_out", False) and issubclass(base_cls, nn.Linear):
        weight = weight.transpose(0, 1).contiguous()  # a plain nn.Linear wants (out, in)
    plain.weight = nn.Parameter(weight, requires_grad=False)
    return plain


def merge_and_unload(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every LoRA layer by a plain torch layer whose weight has the update folded in.

    A 4-bit base becomes a dense nn.Linear (dequantized + update, no re-quantization, so
    nothing is rounded to 4 bits); `dtype` picks its dtype (default: the dequantized dtype).
    Works in place and returns `model` (a bare LoRA layer passed as `model` is returned replaced).
    """
    for layer in lora_layers(model):
        layer.unmerge()
    replaced = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALayer):
            replaced[name] = _plain_module(module, _dense_merged_weight(module, dtype))
    for name, plain in replaced.items():
        if not name:
            return plain
        parent_name, _, child = name.rpartition(".")
        model.get_submodule(parent_name).__setattr__(child, plain)
    return model
