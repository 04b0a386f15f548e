"""bitsandbytes Linear4bit without LoRA: detection, dequantization and the CPU layout workaround.

Nothing here imports bitsandbytes until a Linear4bit exists (so it is already loaded); phi_models
and training use this module for the one CPU workaround bitsandbytes needs.
"""

import importlib.util
import sys

import torch
import torch.nn as nn


def bitsandbytes_available() -> bool:
    """True when bitsandbytes can be imported."""
    return importlib.util.find_spec("bitsandbytes") is not None


def is_linear4bit(module: nn.Module) -> bool:
    """True for a bitsandbytes Linear4bit (without importing bitsandbytes unless it is loaded)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit)


def keep_standard_4bit_layout(model: nn.Module) -> None:
    """Stop bitsandbytes repacking the 4-bit weights in `model` (a Linear4bit, or any module holding
    some) into its inference-only CPU layout.

    On AVX512-BF16 CPUs a Linear4bit evaluated in eval mode without grad converts its weight to a
    packing that has no backward and cannot be dequantized, so a training forward (or a merge)
    after an evaluation would fail; its kernel also computes in bf16 where training did not.
    """
    for module in model.modules():
        if is_linear4bit(module):
            module.support_avx512bf16_for_cpu = False


def restore_standard_layout(module: nn.Module) -> None:
    """Undo bitsandbytes' CPU inference repacking of a 4-bit weight (done before
    `keep_standard_4bit_layout` was called)."""
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
