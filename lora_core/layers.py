"""loralib-compatible LoRA layers: Linear, Embedding and the convolutions.

Same constructor signatures, parameter names, shapes and initialisation as loralib 0.1.2, so
loralib programs and checkpoints work unchanged; extra features are keyword-only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_core.adapters import add_adapter_outputs
from lora_core.base import LoRALayer, create_lora_factors, reset_lora_factors
from lora_core.dropout import dropout_unscaled
from lora_core.errors import LoRAError


def low_rank_output(layer: LoRALayer, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scaling * dropout(x) @ A^T @ B^T, computed in `dtype` (the base output's dtype).

    fp32 factors over a bf16 base are cast down here (as autocast would); their gradients
    still accumulate in fp32. Scaling, and dropout's 1/(1-p), multiply the narrow (..., r)
    tensor, not the (..., in) input or the output.
    """
    lora_A, lora_B = layer.lora_A.to(dtype), layer.lora_B.to(dtype)
    dropped, keep_scale = dropout_unscaled(layer.lora_dropout, x.to(dtype))
    after_A = F.linear(dropped, lora_A)  # (..., in) -> (..., r)
    return F.linear(after_A * (layer.scaling * keep_scale), lora_B)  # (..., r) -> (..., out)


class Linear(LoRALayer, nn.Linear):
    """nn.Linear with a LoRA update; loralib's `lora.Linear`.

    Extra keywords: `use_rslora` (scaling alpha/sqrt(r)), `use_dora` (a learned per-row
    magnitude, `lora_magnitude_vector`), `lora_dtype` (dtype of the LoRA parameters).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 0,
        lora_alpha: int = 1,
        lora_dropout: float = 0.0,
        fan_in_fan_out: bool = False,
        merge_weights: bool = True,
        *,
        use_rslora: bool = False,
        use_dora: bool = False,
        lora_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
        self.fan_in_fan_out = fan_in_fan_out
        if r > 0:
            self._create_lora_parameters(use_rslora, use_dora, lora_dtype)
        self.reset_parameters()
        if fan_in_fan_out:
            self.weight.data = self.weight.data.transpose(0, 1)

    def _create_lora_parameters(self, use_rslora: bool, use_dora: bool, lora_dtype) -> None:
        if use_dora and self.fan_in_fan_out:
            raise LoRAError("use_dora=True is not supported with fan_in_fan_out=True")
        kind = create_lora_factors(
            self, self.weight, (self.r, self.in_features), (self.out_features, self.r), use_rslora, lora_dtype
        )
        if use_dora:
            self.lora_magnitude_vector = nn.Parameter(torch.ones(self.out_features, **kind))
        self.use_dora = bool(use_dora)

    def reset_parameters(self) -> None:
        """Reset the base layer like nn.Linear, then the LoRA factors."""
        nn.Linear.reset_parameters(self)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A: Kaiming-uniform(a=sqrt(5)), B: zeros, so the layer starts equal to its base;
        the DoRA magnitude starts at the row norms of the base weight."""
        reset_lora_factors(self)
        if hasattr(self, "lora_A") and self.use_dora:
            with torch.no_grad():
                self.lora_magnitude_vector.copy_(self._dora_weight_norm())

    def _weight_as_out_in(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.transpose(0, 1) if self.fan_in_fan_out else weight

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A, (out, in) (or (in, out) with fan_in_fan_out)."""
        return self._weight_as_out_in(self.lora_B @ self.lora_A * self.scaling)

    def _dora_weight_norm(self) -> torch.Tensor:
        # ||W + dW|| per output row, detached: DoRA treats the norm as a constant (paper sec. 4.3).
        weight = self.weight.detach().to(self.lora_A.dtype)
        return (weight + self.delta_weight().detach()).norm(p=2, dim=1)

    def _default_merged_weight(self, base: torch.Tensor) -> torch.Tensor:
        if not self.use_dora:
            return super()._default_merged_weight(base)
        wide = torch.promote_types(base.dtype, self.lora_A.dtype)
        combined = base.to(wide) + self.delta_weight().to(wide)
        scale = self.lora_magnitude_vector.to(wide) / combined.norm(p=2, dim=1)
        return (combined * scale[:, None]).to(base.dtype)  # (out,) -> (out, 1) row scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._weight_as_out_in(self.weight)
        if not self.lora_active():
            return add_adapter_outputs(self, x, F.linear(x, weight, self.bias))
        if self.use_dora:
            return self._dora_forward(x, weight)  # inject refuses other adapters beside DoRA
        result = F.linear(x, weight, self.bias)
        return add_adapter_outputs(self, x, result.add_(low_rank_output(self, x, result.dtype)))

    def _dora_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, weight)
        result = result + low_rank_output(self, x, result.dtype)
        scale = self.lora_magnitude_vector / self._dora_weight_norm()
        result = result * scale.to(result.dtype)
        return result if self.bias is None else result + self.bias


class Embedding(LoRALayer, nn.Embedding):
    """nn.Embedding with a LoRA update; loralib's `lora.Embedding` (A starts at zero, B normal)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        r: int = 0,
        lora_alpha: int = 1,
        merge_weights: bool = True,
        *,
        use_rslora: bool = False,
        lora_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=0, merge_weights=merge_weights)
        if r > 0:
            self._create_lora_parameters(use_rslora, lora_dtype)
        self.reset_parameters()

    def _create_lora_parameters(self, use_rslora: bool, lora_dtype) -> None:
        shapes = (self.r, self.num_embeddings), (self.embedding_dim, self.r)
        create_lora_factors(self, self.weight, *shapes, use_rslora, lora_dtype)

    def reset_parameters(self) -> None:
        """Reset the base table like nn.Embedding, then the LoRA factors."""
        nn.Embedding.reset_parameters(self)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """loralib's (deliberately reversed) embedding init: A zeros, B standard normal."""
        if hasattr(self, "lora_A"):
            nn.init.zeros_(self.lora_A)
            nn.init.normal_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """scaling * (B @ A)^T, (num_embeddings, embedding_dim)."""
        return (self.lora_B @ self.lora_A).transpose(0, 1) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.embedding(
            x, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )
        if self.lora_active():
            result = result + embedding_low_rank_output(self, self, x, result.dtype)
        return add_adapter_outputs(self, x, result)


def embedding_low_rank_output(embedding: nn.Embedding, adapter, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scaling * B (A^T looked up at x) for an embedding's adapter (its own factors or a named one)."""
    # Looking rows up in A^T is the embedding of x in the rank-r space: (..., ) -> (..., r).
    after_A = F.embedding(
        x,
        adapter.lora_A.transpose(0, 1),
        embedding.padding_idx,
        None,
        embedding.norm_type,
        embedding.scale_grad_by_freq,
        embedding.sparse,
    )
    return F.linear(after_A.to(dtype) * adapter.scaling, adapter.lora_B.to(dtype))


def _kernel_tuple(conv: nn.Module) -> tuple:
    return tuple(conv.kernel_size)


def create_conv_lora_parameters(layer: LoRALayer, conv: nn.Module, use_rslora: bool, lora_dtype) -> None:
    """Add lora_A (r*k0, in*prod(k)/k0) and lora_B (out/groups*k0, r*k0) for `conv`.

    For a square 2-D kernel these are loralib's shapes; the general rule keeps B @ A the same
    number of elements as the conv weight for 1-D and 3-D kernels too (loralib issue #115).
    """
    kernel = _kernel_tuple(conv)
    k0, rest = kernel[0], math.prod(kernel) // kernel[0]
    shapes = (layer.r * k0, conv.in_channels * rest), (conv.out_channels // conv.groups * k0, layer.r * k0)
    create_lora_factors(layer, conv.weight, *shapes, use_rslora, lora_dtype)


def conv_delta_weight(layer: LoRALayer, conv: nn.Module) -> torch.Tensor:
    """scaling * B @ A reshaped to the conv weight's shape."""
    return (layer.lora_B @ layer.lora_A).view(conv.weight.shape) * layer.scaling


def conv_forward(layer: LoRALayer, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The conv with weight W + delta when LoRA is active, the plain conv otherwise."""
    if not layer.lora_active():
        return add_adapter_outputs(layer, x, conv._conv_forward(x, conv.weight, conv.bias))
    weight = conv.weight + conv_delta_weight(layer, conv).to(conv.weight.dtype)
    return add_adapter_outputs(layer, x, conv._conv_forward(x, weight, conv.bias))


class ConvLoRA(LoRALayer, nn.Module):
    """loralib's convolution wrapper: the torch conv lives in `self.conv` (keys `conv.weight`)."""

    def __init__(
        self,
        conv_module,
        in_channels,
        out_channels,
        kernel_size,
        r=0,
        lora_alpha=1,
        lora_dropout=0.0,
        merge_weights=True,
        *,
        use_rslora: bool = False,
        lora_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        nn.Module.__init__(self)
        self.conv = conv_module(in_channels, out_channels, kernel_size, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
        if r > 0:
            create_conv_lora_parameters(self, self.conv, use_rslora, lora_dtype)
        self.reset_parameters()

    def _weight_owner(self) -> nn.Module:
        return self.conv

    def reset_parameters(self) -> None:
        """Reset the conv, then the LoRA factors."""
        self.conv.reset_parameters()
        reset_lora_factors(self)

    def delta_weight(self) -> torch.Tensor:
        return conv_delta_weight(self, self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_forward(self, self.conv, x)


class Conv1d(ConvLoRA):
    """loralib's `lora.Conv1d(in_channels, out_channels, kernel_size, r=..., ...)`."""

    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv1d, *args, **kwargs)


class Conv2d(ConvLoRA):
    """loralib's `lora.Conv2d(in_channels, out_channels, kernel_size, r=..., ...)`."""

    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv2d, *args, **kwargs)


class Conv3d(ConvLoRA):
    """loralib's `lora.Conv3d(in_channels, out_channels, kernel_size, r=..., ...)`."""

    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv3d, *args, **kwargs)


class _InjectedConvLoRA(LoRALayer):
    """LoRA added in place to an existing torch conv (by `inject`): the conv's own keys stay
    `<name>.weight`/`<name>.bias`; LoRA math as in ConvLoRA."""

    def delta_weight(self) -> torch.Tensor:
        return conv_delta_weight(self, self)

    def reset_lora_parameters(self) -> None:
        """A: Kaiming-uniform(a=sqrt(5)), B: zeros."""
        reset_lora_factors(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_forward(self, self, x)


class InjectedConv1d(_InjectedConvLoRA, nn.Conv1d):
    """An nn.Conv1d that `inject` gave a LoRA update."""


class InjectedConv2d(_InjectedConvLoRA, nn.Conv2d):
    """An nn.Conv2d that `inject` gave a LoRA update."""


class InjectedConv3d(_InjectedConvLoRA, nn.Conv3d):
    """An nn.Conv3d that `inject` gave a LoRA update."""
