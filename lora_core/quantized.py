"""LoRA over a bitsandbytes 4-bit base (Linear4bit, nf4/fp4, double quantization).

bitsandbytes is imported lazily so lora_core imports without it. The LoRA classes are built
on first use for each bitsandbytes class (`LoRALinear4bit`, `LoRAMergedLinearNF4`, ...) and
are also reachable as attributes of this module, so pickled models load again.
"""

import importlib.util
import warnings

import torch
import torch.nn as nn

from lora_core.adapters import add_adapter_outputs
from lora_core.base import LoRALayer, default_lora_dtype
from lora_core.errors import LoRAError
from lora_core.layers import low_rank_output
from lora_core.merged import block_lora_B, sliced_low_rank_output

ROUNDING_WARNING = (
    "merging LoRA into a 4-bit weight dequantizes, adds and re-quantizes it: the "
    "merged weights carry 4-bit rounding error and outputs will differ slightly; "
    "use merge_and_unload(model) for an exact dense copy instead"
)


def bitsandbytes_available() -> bool:
    """True when bitsandbytes can be imported."""
    return importlib.util.find_spec("bitsandbytes") is not None


def is_linear4bit(module: nn.Module) -> bool:
    """True for a bitsandbytes Linear4bit (without importing bitsandbytes unless it is loaded)."""
    import sys

    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit)


def restore_standard_layout(module: nn.Module) -> None:
    """Undo bitsandbytes' CPU inference repacking of a 4-bit weight (done on an eval, no-grad
    forward on AVX512-BF16 CPUs): that layout has no backward and cannot be dequantized."""
    state = getattr(module.weight, "quant_state", None)
    if state is not None and getattr(state, "packing_format_for_cpu", False):
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
            module.weight.data, state
        )


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The dense (out, in) weight of a 4-bit layer, in its quantization dtype."""
    from bitsandbytes.functional import dequantize_4bit

    restore_standard_layout(module)
    weight = module.weight
    return dequantize_4bit(weight.data, weight.quant_state)


class _Quantized4bitLoRA(LoRALayer):
    """Merge machinery for a frozen 4-bit base: merging re-quantizes; unmerge restores the
    original packed parameter object, so it is exact."""

    def _create_lora_parameters(self, out_rows: int, groups: int, use_rslora: bool, lora_dtype) -> None:
        kind = dict(dtype=default_lora_dtype(torch.float32, lora_dtype), device=self.weight.device)
        self.lora_A = nn.Parameter(torch.zeros(self.r * groups, self.in_features, **kind))
        self.lora_B = nn.Parameter(torch.zeros(out_rows, self.r, **kind))
        self._set_scaling(use_rslora)
        self.weight.requires_grad = False

    def dequantized_weight(self) -> torch.Tensor:
        """The base weight dequantized to a dense (out, in) tensor."""
        return dequantized_weight(self)

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            restore_standard_layout(self)  # packed before LoRA was added: training needs the normal layout
        return super().forward(x)

    def _fold_in(self, names) -> None:
        import bitsandbytes as bnb

        warnings.warn(ROUNDING_WARNING, stacklevel=3)
        old = self.weight
        with torch.no_grad():
            dense = self.merged_weight(self.dequantized_weight(), names)
        new = bnb.nn.Params4bit(
            dense.to("cpu"),
            requires_grad=False,
            blocksize=old.blocksize,
            compress_statistics=old.compress_statistics,
            quant_type=old.quant_type,
            quant_storage=old.quant_storage,
            module=self,
        )
        if self._weight_before_merge is None:
            self._weight_before_merge = old
        self.weight = new.to(old.device)  # moving quantizes

    def unmerge(self) -> None:
        if not self.merged:
            return
        if self._weight_before_merge is not None:
            self.weight = self._weight_before_merge
            self._weight_before_merge = None
        self.merged = False
        self.merged_adapters = []

    def _apply(self, fn, *args, **kwargs):
        # Re-quantizing on every .to() would be lossy: move the pristine weight only.
        was_merged = self.merged
        self.unmerge()
        result = super(LoRALayer, self)._apply(fn, *args, **kwargs)
        if was_merged:
            warnings.warn("a merged 4-bit layer was moved: it is now unmerged; call merge() again", stacklevel=2)
        return result


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


_CLASSES: dict[str, type] = {}


def bitsandbytes_class(cls: type) -> type:
    """The bitsandbytes class under a (possibly already LoRA) 4-bit layer class."""
    return next(c for c in cls.__mro__ if c.__module__.startswith("bitsandbytes"))


def lora_class_for(base_cls: type, fused: bool) -> type:
    """The LoRA class for a bitsandbytes Linear4bit (sub)class, created once and cached."""
    name = f"LoRA{'Merged' if fused else ''}{base_cls.__name__}"
    if name not in _CLASSES:
        mixin = _MergedLinear4bitLoRA if fused else _Linear4bitLoRA
        cls = type(name, (mixin, base_cls), {"__module__": __name__, "__doc__": mixin.__doc__})
        _CLASSES[name] = cls
    return _CLASSES[name]


def __getattr__(name: str):
    # Lets pickle find the lazily built classes: LoRA[Merged]Linear4bit / ...NF4 / ...FP4.
    if name.startswith("LoRA") and bitsandbytes_available():
        import bitsandbytes as bnb

        fused = name.startswith("LoRAMerged")
        base_name = name[len("LoRAMerged") :] if fused else name[len("LoRA") :]
        base_cls = getattr(bnb.nn, base_name, None)
        if isinstance(base_cls, type) and issubclass(base_cls, bnb.nn.Linear4bit):
            return lora_class_for(base_cls, fused)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from lora_core.merged import MergedLinear

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
    # bitsandbytes would repack the weight for its inference-only CPU kernel on the first eval,
    # no-grad forward; training after that fails and merging would read a foreign layout.
    module.support_avx512bf16_for_cpu = False
    module.__class__ = lora_class_for(bitsandbytes_class(type(module)), fused)
    LoRALayer.__init__(module, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
    if fused:
        MergedLinear.configure_slices(module, enable_lora, slice_sizes)
        rows = sum(size for _, size, _ in module._enabled_spans)
        module._create_lora_parameters(rows, len(module._enabled_spans), use_rslora, lora_dtype)
    else:
        module._create_lora_parameters(module.out_features, 1, use_rslora, lora_dtype)
    MergedLinear.reset_lora_parameters(module)
    return module
