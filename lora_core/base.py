"""LoRALayer: the state and the exact merge/unmerge machinery shared by every LoRA layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from lora_core.dropout import LoRADropout
from lora_core.errors import LoRAError

DEFAULT_ADAPTER = "default"  # the adapter stored in loralib's own lora_A / lora_B parameters


def default_lora_dtype(weight_dtype: torch.dtype, lora_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype for new LoRA parameters: `lora_dtype` if given, else the base weight's dtype
    widened to at least fp32 (LoRA factors train in fp32 over bf16/fp16/4-bit bases)."""
    if lora_dtype is not None:
        if not lora_dtype.is_floating_point:
            raise LoRAError(f"lora_dtype={lora_dtype} is not a floating-point dtype; use e.g. torch.float32")
        return lora_dtype
    if not weight_dtype.is_floating_point or torch.finfo(weight_dtype).bits < 32:
        return torch.float32
    return weight_dtype


def create_lora_factors(
    layer,
    weight: nn.Parameter,
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    use_rslora: bool,
    lora_dtype: torch.dtype | None,
    base_dtype: torch.dtype | None = None,
) -> dict:
    """Give `layer` zero `lora_A` (a_shape) and `lora_B` (b_shape) beside the base `weight`, set its
    scaling and freeze `weight`. The dtype is `default_lora_dtype(base_dtype or weight.dtype,
    lora_dtype)`; returns the dtype/device keywords used, for further LoRA parameters."""
    kind = dict(dtype=default_lora_dtype(base_dtype or weight.dtype, lora_dtype), device=weight.device)
    layer.lora_A = nn.Parameter(torch.zeros(*a_shape, **kind))
    layer.lora_B = nn.Parameter(torch.zeros(*b_shape, **kind))
    layer._set_scaling(use_rslora)
    weight.requires_grad = False
    return kind


def reset_lora_factors(layer) -> None:
    """loralib's init: A Kaiming-uniform(a=sqrt(5)), B zeros, so the layer starts equal to its base."""
    if hasattr(layer, "lora_A"):
        nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
        nn.init.zeros_(layer.lora_B)


class LoRALayer:
    """loralib's LoRA mixin (not an nn.Module itself): rank, alpha, dropout and merge state.

    Differences from loralib: merging is exact (the pre-merge weight tensor is kept while
    merged and put back by `unmerge`, so merge/unmerge cycles never drift in any dtype),
    loading a state dict into a merged layer unmerges first, dropout is a real module (an
    nn.Dropout subclass with a cheaper CPU mask, see dropout.py), and
    `scaling` may be alpha/sqrt(r) (rsLoRA). Subclasses provide `delta_weight()`.
    """

    def __init__(self, r: int, lora_alpha: float, lora_dropout: float, merge_weights: bool):
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise LoRAError(f"LoRA rank r={r!r} must be an int >= 0 (0 means no LoRA)")
        if not 0.0 <= float(lora_dropout) < 1.0:
            raise LoRAError(f"lora_dropout={lora_dropout!r} must be in [0, 1)")
        self.r = r
        self.lora_alpha = lora_alpha
        self.lora_dropout = LoRADropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        self.merged = False
        self.merge_weights = merge_weights
        self.use_rslora = False
        self.use_dora = False
        self.adapters_disabled = False
        self._weight_before_merge = None
        self.scaling = lora_alpha / r if r > 0 else 0.0
        self.active_adapters = None  # None: every adapter of the layer runs; else a tuple of names
        self.merged_adapters = []  # names folded into the weight, in merge order

    # ----- configuration -------------------------------------------------------------
    def _set_scaling(self, use_rslora: bool) -> None:
        self.use_rslora = bool(use_rslora)
        if self.r > 0:
            self.scaling = self.lora_alpha / (math.sqrt(self.r) if use_rslora else self.r)

    def has_lora(self) -> bool:
        """True when this layer carries LoRA parameters (r > 0 and, for fused layers, a slice enabled)."""
        return self.r > 0 and hasattr(self, "lora_A")

    # ----- named adapters (see adapters.py) -------------------------------------------
    def adapter_names(self) -> list[str]:
        """Names of the adapters this layer carries: DEFAULT_ADAPTER (the loralib `lora_A`/`lora_B`
        parameters) when present, then the extra named adapters in `lora_adapters`."""
        names = [DEFAULT_ADAPTER] if self.has_lora() else []
        extra = self._modules.get("lora_adapters")
        return names + (list(extra.keys()) if extra is not None else [])

    def has_adapter(self, name: str) -> bool:
        """True when this layer carries the adapter `name`."""
        return name in self.adapter_names()

    def adapter_is_active(self, name: str) -> bool:
        """True when `name` is in the layer's active set (None means every adapter is active)."""
        active = getattr(self, "active_adapters", None)
        return active is None or name in active

    def lora_active(self) -> bool:
        """True when forward must add the default adapter's low-rank path (present, active, not
        merged, not disabled)."""
        return (
            self.has_lora()
            and not self.adapters_disabled
            and DEFAULT_ADAPTER not in self.merged_adapters
            and self.adapter_is_active(DEFAULT_ADAPTER)
        )

    # ----- merging -------------------------------------------------------------------
    def _weight_owner(self) -> nn.Module:
        """The module whose `weight` parameter merging changes."""
        return self

    def delta_weight(self) -> torch.Tensor:
        """The scaled low-rank update in the base weight's layout, in the LoRA dtype."""
        raise NotImplementedError

    def _resolve_merge_names(self, adapter_names: Sequence[str] | None) -> list[str]:
        # None: the adapters forward runs now (present and active); else the named ones present here.
        present = self.adapter_names()
        if adapter_names is None:
            return [n for n in present if self.adapter_is_active(n)]
        return [n for n in adapter_names if n in present]

    def _default_merged_weight(self, base: torch.Tensor) -> torch.Tensor:
        """base + the default adapter's delta, in the wider dtype, returned in base's dtype."""
        delta = self.delta_weight()
        wide = torch.promote_types(base.dtype, delta.dtype)
        return (base.to(wide) + delta.to(wide)).to(base.dtype)

    def merged_weight(self, base: torch.Tensor, adapter_names: Sequence[str] | None = None) -> torch.Tensor:
        """base with the given adapters' updates added (default: the active ones), each sum in the
        wider dtype, returned in base's dtype."""
        from lora_core.adapters import slot_delta_weight

        merged = base
        for name in self._resolve_merge_names(adapter_names):
            if name == DEFAULT_ADAPTER:
                merged = self._default_merged_weight(merged)
                continue
            delta = slot_delta_weight(self, self.lora_adapters[name])
            wide = torch.promote_types(merged.dtype, delta.dtype)
            merged = (merged.to(wide) + delta.to(wide)).to(base.dtype)
        return merged

    # The weight swap: the three hooks through which merging reads and replaces the base weight.
    # Dense layers swap the weight's tensor; 4-bit layers (quantized.py) dequantize to read,
    # re-quantize to write and swap the whole packed parameter.
    def dense_weight(self) -> torch.Tensor:
        """The base weight as the dense tensor that merging adds updates to."""
        return self._weight_owner().weight.data

    def _encode_weight(self, merged: torch.Tensor):
        """A dense merged weight in the form the layer stores (what `_swap_weight` takes)."""
        return merged

    def _swap_weight(self, new):
        """Put `new` (a stored form) in place of the base weight; returns the stored form it replaced."""
        weight = self._weight_owner().weight
        old, weight.data = weight.data, new
        return old

    def _fold_in(self, names: list[str]) -> None:
        """Write the merged weight for `names` into the base weight, keeping the pristine one."""
        with torch.no_grad():
            merged = self._encode_weight(self.merged_weight(self.dense_weight(), names))
        old = self._swap_weight(merged)
        if self._weight_before_merge is None:
            self._weight_before_merge = old

    def merge(self, adapter_names: Sequence[str] | None = None) -> None:
        """Fold adapters into the base weight (default: the active ones; a list merges just those).
        Exact: `unmerge` restores the pristine tensor."""
        if self.adapters_disabled:
            return
        names = [n for n in self._resolve_merge_names(adapter_names) if n not in self.merged_adapters]
        if names:
            self._fold_in(names)
            self.merged_adapters = list(self.merged_adapters) + names
        if names or adapter_names is None:
            self.merged = True

    def unmerge(self) -> None:
        """Undo every `merge` bit-exactly by putting the pre-merge weight tensor back."""
        if not self.merged:
            return
        if self._weight_before_merge is not None:
            self._swap_weight(self._weight_before_merge)
            self._weight_before_merge = None
        self.merged = False
        self.merged_adapters = []

    # ----- nn.Module hooks (LoRALayer comes first in the bases, so these win) --------
    def train(self, mode: bool = True):
        """loralib semantics: with merge_weights, eval() merges and train() unmerges (exactly)."""
        super().train(mode)
        if self.merge_weights:
            if mode:
                self.unmerge()
            else:
                self.merge()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A merged weight is not the pretrained weight: restore it before new tensors land,
        # so loading (e.g. a LoRA checkpoint in eval mode) can never corrupt the base.
        if getattr(self, "merged", False):
            self.unmerge()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.half() while merged: convert the pristine weight, then merge again.
        was_merged = getattr(self, "merged", False)
        names = list(getattr(self, "merged_adapters", []))
        if was_merged:
            self.unmerge()
        result = super()._apply(fn, *args, **kwargs)
        if was_merged:
            self._merge_after_move(names)
        return result

    def _merge_after_move(self, names: list[str]) -> None:
        """Called by `_apply` after a merged layer was unmerged and moved: merge the same adapters again."""
        self.merge(names if names else None)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        if self.r == 0:
            return base
        extra = f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:.4g}"
        if self.use_rslora:
            extra += ", rslora"
        if self.use_dora:
            extra += ", dora"
        return f"{base}, {extra}" if base else extra
