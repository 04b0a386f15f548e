"""MergedLinear: LoRA on chosen output slices of a fused projection (e.g. q/k/v in one matmul)."""

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_core.adapters import add_adapter_outputs
from lora_core.base import LoRALayer, create_lora_factors, reset_lora_factors
from lora_core.dropout import dropout_unscaled
from lora_core.errors import LoRAError


def resolve_slices(out_features: int, enable_lora: Sequence[bool], slice_sizes: Sequence[int] | None):
    """Validate `enable_lora`/`slice_sizes` and return the slice sizes as a tuple.

    slice_sizes=None is loralib's equal split, which needs len(enable_lora) to divide out_features.
    """
    enable_lora = list(enable_lora)
    if not enable_lora:
        raise LoRAError("enable_lora is empty; give one bool per output slice, e.g. [True, False, True]")
    if slice_sizes is None:
        if out_features % len(enable_lora) != 0:
            raise LoRAError(
                f"len(enable_lora)={len(enable_lora)} does not divide out_features={out_features}; "
                f"pass slice_sizes=(...) for unequal slices"
            )
        return tuple([out_features // len(enable_lora)] * len(enable_lora))
    sizes = tuple(slice_sizes)
    if len(sizes) != len(enable_lora):
        raise LoRAError(
            f"slice_sizes has {len(sizes)} entries but enable_lora has {len(enable_lora)}; give one size per slice"
        )
    if any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
        raise LoRAError(f"slice_sizes={sizes} must be positive ints")
    if sum(sizes) != out_features:
        raise LoRAError(f"slice_sizes={sizes} sum to {sum(sizes)}, not out_features={out_features}")
    return sizes


class MergedLinear(LoRALayer, nn.Linear):
    """loralib's `lora.MergedLinear`: one fused nn.Linear whose enabled output slices each get
    their own rank-r LoRA. Parameters keep loralib's names and shapes: lora_A (r*n_enabled, in),
    lora_B (rows of the enabled slices, r), so loralib checkpoints load.

    `slice_sizes=(3072, 1024, 1024)` gives unequal slices (grouped-query attention); the default
    None is loralib's equal split. Forward runs the low-rank path per enabled slice: x A^T once
    (r*n_enabled wide), then each slice's rank-r group through its own B_g, joined by torch.cat
    with zero blocks for disabled slices. It builds neither the full delta-W nor block_lora_B's
    mostly-zero (out, r*n) matrix (merging only; one matmul with it does ~n_enabled times the
    B-side FLOPs). Measured against the block matrix in docs/performance.md.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 0,
        lora_alpha: int = 1,
        lora_dropout: float = 0.0,
        enable_lora: Sequence[bool] = (False,),
        fan_in_fan_out: bool = False,
        merge_weights: bool = True,
        *,
        slice_sizes: Sequence[int] | None = None,
        use_rslora: bool = False,
        lora_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
        self.fan_in_fan_out = fan_in_fan_out
        self.configure_slices(enable_lora, slice_sizes)
        if r > 0 and any(self.enable_lora):
            self._create_lora_parameters(use_rslora, lora_dtype)
        self.reset_parameters()
        if fan_in_fan_out:
            self.weight.data = self.weight.data.transpose(0, 1)

    def configure_slices(self, enable_lora: Sequence[bool], slice_sizes: Sequence[int] | None) -> None:
        """Record which slices get LoRA: (out_start, size, row_in_lora_B) per enabled slice."""
        self.slice_sizes = resolve_slices(self.out_features, enable_lora, slice_sizes)
        self.enable_lora = [bool(e) for e in enable_lora]
        spans, out_start, b_start = [], 0, 0
        for size, enabled in zip(self.slice_sizes, self.enable_lora):
            if enabled:
                spans.append((out_start, size, b_start))
                b_start += size
            out_start += size
        self._enabled_spans = tuple(spans)

    def _create_lora_parameters(self, use_rslora: bool, lora_dtype) -> None:
        create_lora_factors(self, self.weight, *sliced_factor_shapes(self), use_rslora, lora_dtype)

    def reset_parameters(self) -> None:
        """Reset the base layer like nn.Linear, then the LoRA factors."""
        nn.Linear.reset_parameters(self)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A: Kaiming-uniform(a=sqrt(5)), B: zeros."""
        reset_lora_factors(self)

    @property
    def lora_ind(self) -> torch.Tensor:
        """Boolean mask (out_features,) of the rows that carry LoRA (loralib's attribute)."""
        mask = torch.zeros(self.out_features, dtype=torch.bool, device=self.weight.device)
        for out_start, size, _ in self._enabled_spans:
            mask[out_start : out_start + size] = True
        return mask

    def slice_info(self) -> list[dict]:
        """Per slice: name, output rows [start, start+size), enabled, and for enabled slices the
        rows of lora_A and lora_B that hold its factors (for exporters that split per slice)."""
        names = list(getattr(self, "lora_slices", None) or [f"slice{i}" for i in range(len(self.slice_sizes))])
        info, out_start, group = [], 0, 0
        b_rows = {start: b for start, _, b in self._enabled_spans}
        for name, size, enabled in zip(names, self.slice_sizes, self.enable_lora):
            entry = dict(name=name, start=out_start, size=size, enabled=enabled)
            if enabled and self.r > 0:
                entry["lora_A_rows"] = (group * self.r, (group + 1) * self.r)
                entry["lora_B_rows"] = (b_rows[out_start], b_rows[out_start] + size)
                group += 1
            info.append(entry)
            out_start += size
        return info

    def delta_weight(self) -> torch.Tensor:
        """scaling * the block-sparse update (enabled slices' B_g @ A_g), in the weight's layout."""
        delta = block_lora_B(self) @ self.lora_A * self.scaling  # (out, r*n) @ (r*n, in) -> (out, in)
        return delta.transpose(0, 1) if self.fan_in_fan_out else delta

    def merge_AB(self) -> torch.Tensor:
        """loralib's unscaled update B @ A zero-padded to the full weight (built only on request)."""
        return self.delta_weight() / self.scaling

    def extra_repr(self) -> str:
        slices = ", ".join(f"{i['name']}={i['size']}{'*' if i['enabled'] else ''}" for i in self.slice_info())
        return f"{super().extra_repr()}, slices=({slices})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.transpose(0, 1) if self.fan_in_fan_out else self.weight
        result = F.linear(x, weight, self.bias)
        if self.lora_active():
            result = result.add_(sliced_low_rank_output(self, x, result.dtype))
        return add_adapter_outputs(self, x, result)


def sliced_factor_shapes(layer) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (lora_A, lora_B) shapes of a sliced layer: (r * n_enabled, in), (enabled rows, r)."""
    enabled_rows = sum(size for _, size, _ in layer._enabled_spans)
    return (layer.r * len(layer._enabled_spans), layer.in_features), (enabled_rows, layer.r)


def block_lora_B(layer, dtype=None) -> torch.Tensor:
    """lora_B laid out as an (out_features, r * n_enabled) block matrix: slice g's rows hold B_g in
    columns [g*r, (g+1)*r) and zeros elsewhere; rows of disabled slices are zero. Block @ lora_A
    is the merged update; forward does not use it (see sliced_low_rank_output)."""
    lora_B = layer.lora_B if dtype is None else layer.lora_B.to(dtype)
    r = layer.r
    blocks = lora_B.new_zeros(layer.out_features, r * len(layer._enabled_spans))
    for group, (out_start, size, b_start) in enumerate(layer._enabled_spans):
        blocks[out_start : out_start + size, group * r : (group + 1) * r] = lora_B[b_start : b_start + size]
    return blocks


def sliced_low_rank_output(layer, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Every enabled slice's scaling * x A_g^T B_g^T in its output rows (zeros elsewhere), in `dtype`."""
    lora_A = layer.lora_A.to(dtype)
    lora_B = layer.lora_B.to(dtype)
    # One dropout mask over the shared input for all slices (loralib's MergedLinear); its 1/(1-p)
    # rides on the narrow (..., r*n) tensor with the scaling.
    dropped, keep_scale = dropout_unscaled(layer.lora_dropout, x.to(dtype))
    after_A = F.linear(dropped, lora_A) * (layer.scaling * keep_scale)  # (..., in) -> (..., r*n)
    # Each slice's rank-r group through its own B_g, joined by cat (no in-place slice writes, so
    # autograd stays simple): fewer FLOPs than one matmul with the mostly-zero block matrix of
    # block_lora_B; faster in fp32, a tie in bf16 at Phi sizes (timings in the MergedLinear docstring).
    groups = iter(after_A.split(layer.r, dim=-1))
    b_rows = {out_start: b_start for out_start, _, b_start in layer._enabled_spans}
    pieces, out_start = [], 0
    for size, enabled in zip(layer.slice_sizes, layer.enable_lora):
        if enabled:
            b_start = b_rows[out_start]  # (..., r) -> (..., size) through this slice's own B_g
            pieces.append(F.linear(next(groups), lora_B[b_start : b_start + size]))
        else:
            pieces.append(after_A.new_zeros(*after_A.shape[:-1], size))
        out_start += size
    return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
