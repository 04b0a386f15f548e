"""4-bit (nf4 / fp4) bases through bitsandbytes' Linear4bit.

Every nn.Linear inside the decoder layers becomes a Linear4bit; the embedding, lm_head,
norms and biases stay dense (the bitsandbytes / transformers default). The loader
builds each Linear4bit empty on the meta device and quantizes its weight the moment
the full tensor has arrived, so a dense copy of the model never exists.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import PhiModelError

QUANT_TYPES = ("nf4", "fp4")


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError as err:  # pragma: no cover - bitsandbytes is a dependency
        raise PhiModelError("quantize='nf4'/'fp4' needs bitsandbytes: pip install bitsandbytes") from err
    return bnb


def check_quant_type(quant_type: str | None) -> None:
    """Reject anything but None, 'nf4' or 'fp4' with a clear message."""
    if quant_type is not None and quant_type not in QUANT_TYPES:
        raise PhiModelError(f"quantize='{quant_type}' is not supported; use None, 'nf4' or 'fp4'")


def quantizable_linears(model: nn.Module) -> list[str]:
    """Qualified names of the linears that a 4-bit load quantizes (all inside ``model.layers``)."""
    return [
        name
        for name, module in model.named_modules()
        if name.startswith("model.layers.") and type(module) is nn.Linear
    ]


def empty_linear4bit(
    linear: nn.Linear, quant_type: str, double_quant: bool, compute_dtype: torch.dtype
) -> nn.Module:
    """A meta-device Linear4bit shaped like ``linear`` (keeps its ``lora_slices``)."""
    bnb = _bnb()
    module = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=double_quant,
        quant_type=quant_type,
        device="meta",
    )
    if hasattr(linear, "lora_slices"):
        module.lora_slices = dict(linear.lora_slices)
    return module


def set_quantized_weight(module: nn.Module, weight: torch.Tensor, device: torch.device) -> None:
    """Quantize a dense weight (out, in) into ``module`` (a Linear4bit) on ``device``."""
    bnb = _bnb()
    param = bnb.nn.Params4bit(
        weight,
        requires_grad=False,
        compress_statistics=module.weight.compress_statistics,
        quant_type=module.weight.quant_type,
        module=module,
    )
    module.weight = param._quantize(device)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at dotted path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


@torch.no_grad()
def quantize_model(
    model: nn.Module, quant_type: str, double_quant: bool = True, compute_dtype: torch.dtype | None = None
) -> nn.Module:
    """Turn an already-dense model's layer linears into Linear4bit in place (used for ``tiny``)."""
    check_quant_type(quant_type)
    for name in quantizable_linears(model):
        dense = model.get_submodule(name)
        device = dense.weight.device
        new = empty_linear4bit(dense, quant_type, double_quant, compute_dtype or dense.weight.dtype)
        set_quantized_weight(new, dense.weight.detach(), device)
        if dense.bias is not None:
            new.bias = nn.Parameter(dense.bias.detach().clone(), requires_grad=dense.bias.requires_grad)
        replace_module(model, name, new)
    return model
