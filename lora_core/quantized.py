"""LoRA over a bitsandbytes 4-bit base (Linear4bit, nf4/fp4, double quantization).

The LoRA classes (`LoRALinear4bit`, `LoRAMergedLinear4bit`, and the same over `LinearNF4` and
`LinearFP4`) are defined here when bitsandbytes is installed; without it the names exist and raise
LoRAError when used. Importing this module imports bitsandbytes, so `inject` imports it only
once a model holds a Linear4bit (bitsandbytes is loaded then anyway).
"""

import warnings

import torch
import torch.nn as nn

from lora_core.adapters import add_adapter_outputs
from lora_core.base import LoRALayer, create_lora_factors, reset_lora_factors
from lora_core.errors import LoRAError
from lora_core.layers import low_rank_output
from lora_core.linear4bit import (
    bitsandbytes_available,
    dequantized_weight,
    is_linear4bit,
    keep_standard_4bit_layout,
    restore_standard_layout,
)
from lora_core.merged import MergedLinear, block_lora_B, sliced_factor_shapes, sliced_low_rank_output

ROUNDING_WARNING = (
    "merging LoRA into a 4-bit weight dequantizes, adds and re-quantizes it: the "
    "merged weights carry 4-bit rounding error and outputs will differ slightly; "
    "use merge_and_unload(model) for an exact dense copy instead"
)


class _Quantized4bitLoRA(LoRALayer):
    """LoRALayer's merge/unmerge over a frozen 4-bit base, through the weight-swap hooks: merging
    dequantizes, adds the updates and re-quantizes into a new packed parameter; unmerge puts the
    original packed parameter object back, so it is exact."""

    def dequantized_weight(self) -> torch.Tensor:
        """The base weight dequantized to a dense (out, in) tensor."""
        return dequantized_weight(self)

    def dense_weight(self) -> torch.Tensor:
        """The dequantized base weight: what merging adds updates to."""
        return self.dequantized_weight()

    def _encode_weight(self, merged: torch.Tensor):
        import bitsandbytes as bnb

        warnings.warn(ROUNDING_WARNING, stacklevel=4)  # the caller of merge()
        old = self.weight
        new = bnb.nn.Params4bit(
            merged.to("cpu"),
            requires_grad=False,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
            module=self,
        )
        return new.to(old.device)  # moving quantizes

    def _swap_weight(self, new):
        old, self.weight = self.weight, new
        return old

    def _merge_after_move(self, names: list[str]) -> None:
        # Re-quantizing on every .to() would be lossy: only the pristine weight is moved.
        warnings.warn("a merged 4-bit layer was moved: it is now unmerged; call merge() again", stacklevel=3)

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            restore_standard_layout(self)  # packed before LoRA was added: training needs the normal layout
        return super().forward(x)


class _Linear4bitLoRA(_Quantized4bitLoRA):
    """LoRA over the whole output of a 4-bit Linear."""

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self._base_forward(x)
        if self.lora_active():
            # Out of place: bitsandbytes' autograd function may keep its output for backward.
            result = result + low_rank_output(self, x, result.dtype)
        return add_adapter_outputs(self, x, result)


class _MergedLinear4bitLoRA(_Quantized4bitLoRA):
    """LoRA over chosen output slices of a fused 4-bit Linear."""

    def delta_weight(self) -> torch.Tensor:
        return block_lora_B(self) @ self.lora_A * self.scaling  # (out, r*n) @ (r*n, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self._base_forward(x)
        if self.lora_active():
            result = result + sliced_low_rank_output(self, x, result.dtype)
        return add_adapter_outputs(self, x, result)


if bitsandbytes_available():
    import bitsandbytes as bnb

    class LoRALinear4bit(_Linear4bitLoRA, bnb.nn.Linear4bit):
        """LoRA over the whole output of a 4-bit Linear."""

    class LoRAMergedLinear4bit(_MergedLinear4bitLoRA, bnb.nn.Linear4bit):
        """LoRA over chosen output slices of a fused 4-bit Linear."""

    class LoRALinearNF4(_Linear4bitLoRA, bnb.nn.LinearNF4):
        """LoRA over the whole output of a 4-bit Linear."""

    class LoRAMergedLinearNF4(_MergedLinear4bitLoRA, bnb.nn.LinearNF4):
        """LoRA over chosen output slices of a fused 4-bit Linear."""

    class LoRALinearFP4(_Linear4bitLoRA, bnb.nn.LinearFP4):
        """LoRA over the whole output of a 4-bit Linear."""

    class LoRAMergedLinearFP4(_MergedLinear4bitLoRA, bnb.nn.LinearFP4):
        """LoRA over chosen output slices of a fused 4-bit Linear."""

    # (bitsandbytes class, fused) -> its LoRA class; a subclass of these gets its nearest base's.
    _LORA_CLASSES = {
        (bnb.nn.Linear4bit, False): LoRALinear4bit,
        (bnb.nn.Linear4bit, True): LoRAMergedLinear4bit,
        (bnb.nn.LinearNF4, False): LoRALinearNF4,
        (bnb.nn.LinearNF4, True): LoRAMergedLinearNF4,
        (bnb.nn.LinearFP4, False): LoRALinearFP4,
        (bnb.nn.LinearFP4, True): LoRAMergedLinearFP4,
    }
else:

    class _NeedsBitsandbytes:
        """Stands for a 4-bit LoRA class where bitsandbytes is not installed."""

        def __new__(cls, *args, **kwargs):
            raise LoRAError(f"{cls.__name__} is a bitsandbytes 4-bit layer; install bitsandbytes to use it")

    class LoRALinear4bit(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    class LoRAMergedLinear4bit(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    class LoRALinearNF4(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    class LoRAMergedLinearNF4(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    class LoRALinearFP4(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    class LoRAMergedLinearFP4(_NeedsBitsandbytes):
        """Needs bitsandbytes."""

    _LORA_CLASSES = {}


def lora_class_for(cls: type, fused: bool) -> type:
    """The LoRA class for a bitsandbytes Linear4bit (sub)class, or an already adapted one."""
    base = next((c for c in cls.__mro__ if (c, fused) in _LORA_CLASSES), None)
    if base is None:
        raise LoRAError(f"{cls.__name__} is not a bitsandbytes Linear4bit; 4-bit LoRA needs one")
    return _LORA_CLASSES[base, fused]


def as_lora_linear4bit(module: nn.Module, fused: bool) -> nn.Module:
    """Give a bitsandbytes Linear4bit its LoRA class in place (LoRA state is set up by the caller)."""
    # bitsandbytes would repack the weight for its inference-only CPU kernel on the first eval,
    # no-grad forward; training after that fails and merging would read a foreign layout.
    keep_standard_4bit_layout(module)
    module.__class__ = lora_class_for(type(module), fused)
    return module


def add_lora_to_linear4bit(
    module: nn.Module,
    r: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    *,
    enable_lora=None,
    slice_sizes=None,
    use_rslora: bool = False,
    lora_dtype: torch.dtype | None = None,
    merge_weights: bool = False,
) -> nn.Module:
    """Turn a bitsandbytes Linear4bit into its LoRA class in place (same object, same packed
    weight). With `enable_lora` it becomes a fused layer with LoRA on the enabled slices."""
    if not is_linear4bit(module):
        raise LoRAError(f"expected a bitsandbytes Linear4bit, got {type(module).__name__}")
    if r <= 0:
        raise LoRAError(f"LoRA rank r={r} must be > 0 to adapt a 4-bit layer")
    if not getattr(module.weight, "bnb_quantized", False):
        raise LoRAError(
            "the Linear4bit weight is not quantized yet; move the model to its device "
            "(e.g. model.to('cpu')) before adding LoRA"
        )
    fused = enable_lora is not None
    as_lora_linear4bit(module, fused)
    LoRALayer.__init__(module, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
    if fused:
        MergedLinear.configure_slices(module, enable_lora, slice_sizes)
        shapes = sliced_factor_shapes(module)
    else:
        shapes = (r, module.in_features), (module.out_features, r)
    # The packed weight's dtype says nothing about its values: the factors default to fp32.
    create_lora_factors(module, module.weight, *shapes, use_rslora, lora_dtype, base_dtype=torch.float32)
    reset_lora_factors(module)
    return module
