"""Named adapters: several LoRA adapters on the same layers of one model.

The adapter named DEFAULT_ADAPTER ("default") lives in each layer's own loralib parameters
(`lora_A`, `lora_B`, ...), so a model with one adapter keeps loralib's layout and keys. Every other
adapter lives in the layer's `lora_adapters` ModuleDict as an `AdapterSlot` (state-dict keys
`<layer>.lora_adapters.<name>.lora_A`, ...). Forward adds every active, unmerged adapter's low-rank
output; `adapter_rows` sends each row of a batch through its own adapter.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from lora_core.base import DEFAULT_ADAPTER, LoRALayer, default_lora_dtype
from lora_core.dropout import LoRADropout
from lora_core.errors import LoRAError

SLOT_KINDS = ("linear", "sliced", "embedding", "conv")


class AdapterSlot(nn.Module):
    """One named (non-default) adapter of one layer: its factors, rank, alpha, scaling and dropout.

    `kind` says how the factors act: "linear" (lora_A (r, in), lora_B (out, r)), "sliced" (chosen
    output slices of a fused projection, MergedLinear's layout), "embedding" (loralib Embedding's
    layout) or "conv" (loralib ConvLoRA's layout).
    """

    def __init__(self, kind: str, r: int, lora_alpha: float, lora_dropout: float, use_rslora: bool):
        super().__init__()
        if kind not in SLOT_KINDS:
            raise LoRAError(f"adapter kind {kind!r} is not one of {SLOT_KINDS}")
        self.kind = kind
        self.r = r
        self.lora_alpha = lora_alpha
        self.use_rslora = bool(use_rslora)
        self.use_dora = False
        self.scaling = lora_alpha / (math.sqrt(r) if use_rslora else r)
        self.lora_dropout = LoRADropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()

    def _set_scaling(self, use_rslora: bool) -> None:
        self.use_rslora = bool(use_rslora)
        self.scaling = self.lora_alpha / (math.sqrt(self.r) if use_rslora else self.r)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:.4g}"


def new_slot(
    layer: LoRALayer,
    r: int,
    lora_alpha: float,
    lora_dropout: float,
    *,
    use_rslora: bool = False,
    lora_dtype: torch.dtype | None = None,
    enable_lora: Sequence[bool] | None = None,
    slice_sizes: Sequence[int] | None = None,
) -> AdapterSlot:
    """A freshly initialised slot shaped for `layer` (A Kaiming-uniform, B zeros; embeddings the
    other way round, as loralib), not yet attached."""
    from lora_core.layers import Embedding, create_conv_lora_parameters
    from lora_core.merged import MergedLinear

    if isinstance(layer, Embedding):
        kind = "embedding"
    elif isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or hasattr(layer, "conv"):
        kind = "conv"
    else:
        kind = "sliced" if enable_lora is not None else "linear"
    slot = AdapterSlot(kind, r, lora_alpha, lora_dropout, use_rslora)
    weight = layer._weight_owner().weight
    base_dtype = torch.float32 if hasattr(layer, "dequantized_weight") else weight.dtype
    options = dict(dtype=default_lora_dtype(base_dtype, lora_dtype), device=weight.device)
    if kind == "embedding":
        slot.lora_A = nn.Parameter(torch.zeros(r, layer.num_embeddings, **options))
        slot.lora_B = nn.Parameter(torch.zeros(layer.embedding_dim, r, **options))
        nn.init.normal_(slot.lora_B)
        return slot
    if kind == "conv":
        create_conv_lora_parameters(slot, layer._weight_owner(), use_rslora, lora_dtype)
    elif kind == "sliced":
        slot.out_features = layer.out_features
        MergedLinear.configure_slices(slot, enable_lora, slice_sizes)
        rows = sum(size for _, size, _ in slot._enabled_spans)
        slot.lora_A = nn.Parameter(torch.zeros(r * len(slot._enabled_spans), layer.in_features, **options))
        slot.lora_B = nn.Parameter(torch.zeros(rows, r, **options))
    else:
        slot.lora_A = nn.Parameter(torch.zeros(r, layer.in_features, **options))
        slot.lora_B = nn.Parameter(torch.zeros(layer.out_features, r, **options))
    nn.init.kaiming_uniform_(slot.lora_A, a=math.sqrt(5))
    return slot


def attach_slot(layer: LoRALayer, name: str, slot: AdapterSlot) -> None:
    """Put `slot` on `layer` under `name` (creating the layer's `lora_adapters` dict on first use)."""
    if "lora_adapters" not in layer._modules:
        layer.lora_adapters = nn.ModuleDict()
    layer.lora_adapters[name] = slot


def slot_delta_weight(layer: LoRALayer, slot: AdapterSlot) -> torch.Tensor:
    """The slot's scaled update in the layer's base-weight layout, in the LoRA dtype."""
    from lora_core.merged import block_lora_B

    if slot.kind == "embedding":
        return (slot.lora_B @ slot.lora_A).transpose(0, 1) * slot.scaling  # (dim, num) -> (num, dim)
    if slot.kind == "conv":
        return (slot.lora_B @ slot.lora_A).view(layer._weight_owner().weight.shape) * slot.scaling
    if slot.kind == "sliced":
        delta = block_lora_B(slot) @ slot.lora_A * slot.scaling  # (out, r*n) @ (r*n, in) -> (out, in)
    else:
        delta = slot.lora_B @ slot.lora_A * slot.scaling
    return delta.transpose(0, 1) if getattr(layer, "fan_in_fan_out", False) else delta


def slot_output(layer: LoRALayer, slot: AdapterSlot, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The slot's contribution to the layer's output for input x, in `dtype`."""
    from lora_core.layers import embedding_low_rank_output, low_rank_output
    from lora_core.merged import sliced_low_rank_output

    if slot.kind == "linear":
        return low_rank_output(slot, x, dtype)
    if slot.kind == "sliced":
        return sliced_low_rank_output(slot, x, dtype)
    if slot.kind == "embedding":
        return embedding_low_rank_output(layer, slot, x, dtype)
    conv = layer._weight_owner()
    # A convolution is linear in its weight: conv(x, W + dW) = conv(x, W) + conv(x, dW). No dropout,
    # as in loralib's ConvLoRA.
    return conv._conv_forward(x, slot_delta_weight(layer, slot).to(dtype), None)


def add_adapter_outputs(layer: LoRALayer, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """result plus every active, unmerged named adapter's output (result itself when there are none)."""
    slots = layer._modules.get("lora_adapters")
    if not slots or layer.adapters_disabled:
        return result
    for name, slot in slots.items():
        if name not in layer.merged_adapters and layer.adapter_is_active(name):
            result = result + slot_output(layer, slot, x, result.dtype)
    return result


# ----- model level ------------------------------------------------------------------------------
def _layers(model: nn.Module) -> list[LoRALayer]:
    return [m for m in model.modules() if isinstance(m, LoRALayer)]


def adapter_names(model: nn.Module) -> list[str]:
    """Every adapter name carried by some layer of `model`, in first-seen order."""
    seen: dict[str, None] = {}
    for layer in _layers(model):
        for name in layer.adapter_names():
            seen.setdefault(name, None)
    return list(seen)


def check_adapter_name(name) -> str:
    """`name` if it can name an adapter (a non-empty str of letters, digits, '_' or '-'), else LoRAError."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise LoRAError(
            f"adapter_name={name!r} must be a non-empty string of letters, digits, '_' or '-', "
            f"e.g. 'default' or 'roleplay'"
        )
    return name


def check_adapter_names(model: nn.Module, names) -> list[str]:
    """`names` (a str or a list of str) as a list, each carried by `model`; otherwise LoRAError."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        raise LoRAError(f"adapter names {names!r} must be a list of adapter names, e.g. ['default']")
    known = adapter_names(model)
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise LoRAError(f"adapter {name!r} is not on this model; its adapters: {known or 'none'}")
    return list(names)


def _remerge(layer: LoRALayer, names: list[str]) -> None:
    # Merge state depends on which adapters are folded in: rebuild it from the pristine weight.
    layer.unmerge()
    if names:
        layer.merge(names)


def set_active_adapters(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    """Make exactly `names` run in forward (None: every adapter; [] : the base model). Merged
    adapters that become inactive are unmerged. Returns the active names (all of them for None)."""
    layers = _layers(model)
    if names is None:
        for layer in layers:
            layer.active_adapters = None
        model.lora_active_adapters = None
        return adapter_names(model)
    names = check_adapter_names(model, names)
    for layer in layers:
        layer.active_adapters = tuple(names)
        if any(n not in names for n in layer.merged_adapters):
            _remerge(layer, [n for n in layer.merged_adapters if n in names])
    model.lora_active_adapters = list(names)
    return list(names)


def active_adapters(model: nn.Module) -> list[str]:
    """The names `set_active_adapters` chose (every adapter when it has not been called)."""
    chosen = getattr(model, "lora_active_adapters", None)
    return adapter_names(model) if chosen is None else list(chosen)


def delete_adapter(model: nn.Module, name: str) -> int:
    """Remove adapter `name` from every layer (unmerging it first where merged). Returns the number
    of layers it was removed from. The default adapter's loralib parameters go too (r becomes 0)."""
    check_adapter_names(model, [name])
    count = 0
    for layer in _layers(model):
        if not layer.has_adapter(name):
            continue
        remaining = [n for n in layer.merged_adapters if n != name]
        if layer.merged:
            layer.unmerge()
        if name == DEFAULT_ADAPTER:
            for param in ("lora_A", "lora_B", "lora_magnitude_vector"):
                if param in layer._parameters:
                    delattr(layer, param)
            layer.r, layer.scaling, layer.use_dora = 0, 0.0, False
            layer.lora_dropout = nn.Identity()
        else:
            del layer.lora_adapters[name]
        if layer.active_adapters is not None:
            layer.active_adapters = tuple(n for n in layer.active_adapters if n != name)
        if remaining:
            layer.merge(remaining)
        count += 1
    configs = getattr(model, "lora_core_adapters", None) or {}
    configs.pop(name, None)
    if name == DEFAULT_ADAPTER and hasattr(model, "lora_core_config"):
        model.lora_core_config = {}
    chosen = getattr(model, "lora_active_adapters", None)
    if chosen is not None:
        model.lora_active_adapters = [n for n in chosen if n != name]
    return count


def _check_rows(model: nn.Module, names_per_row) -> list[str | None]:
    if not isinstance(names_per_row, (list, tuple)) or not names_per_row:
        raise LoRAError(
            f"names_per_row={names_per_row!r} must be a non-empty list with one adapter name "
            f"(or None for the base model) per batch row"
        )
    known = adapter_names(model)
    for name in names_per_row:
        if name is not None and (not isinstance(name, str) or name not in known):
            raise LoRAError(
                f"names_per_row names adapter {name!r}, which is not on this model; "
                f"its adapters: {known or 'none'} (None = base model)"
            )
    return list(names_per_row)


def _row_forward(layer: LoRALayer, forward, rows: list[str | None]):
    groups: dict[str | None, list[int]] = {}
    for index, name in enumerate(rows):
        groups.setdefault(name, []).append(index)

    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.dim() == 0 or x.shape[0] != len(rows):
            raise LoRAError(
                f"adapter_rows was given {len(rows)} rows, but a LoRA layer got input of shape "
                f"{tuple(x.shape)} (batch first expected); pass one name per batch row"
            )
        saved = layer.active_adapters
        try:
            if len(groups) == 1:
                (name,) = groups
                layer.active_adapters = () if name is None else (name,)
                return forward(x, *args, **kwargs)
            outputs, order = [], []
            for name, indices in groups.items():
                layer.active_adapters = () if name is None else (name,)
                picked = torch.tensor(indices, device=x.device)
                outputs.append(forward(x.index_select(0, picked), *args, **kwargs))
                order.extend(indices)
        finally:
            layer.active_adapters = saved
        # Rows come out grouped by adapter: put each back at its batch position.
        inverse = torch.argsort(torch.tensor(order, device=outputs[0].device))
        return torch.cat(outputs, dim=0).index_select(0, inverse)

    return run


@contextlib.contextmanager
def adapter_rows(model: nn.Module, names_per_row: Sequence[str | None]) -> Iterator[nn.Module]:
    """Inside the block, row b of every batch goes through adapter names_per_row[b] alone (None:
    the base model), as if that row ran by itself with only that adapter active. Merged layers are
    unmerged for the duration (and merged again after). Every LoRA layer must see batch-first input
    with len(names_per_row) rows. Not thread-safe: one adapter_rows block per model at a time."""
    rows = _check_rows(model, names_per_row)
    layers = _layers(model)
    state = [(layer, layer.merged, list(layer.merged_adapters)) for layer in layers]
    for layer in layers:
        if "forward" in layer.__dict__:
            raise LoRAError("adapter_rows blocks cannot be nested on the same model")
    for layer in layers:
        layer.unmerge()
        layer.forward = _row_forward(layer, layer.forward, rows)
    try:
        yield model
    finally:
        for layer, was_merged, merged_names in state:
            del layer.forward
            if was_merged:
                layer.merge(merged_names or None)
