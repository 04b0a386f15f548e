"""4-bit (nf4 / fp4) bases through bitsandbytes' Linear4bit.

Every nn.Linear inside the decoder layers becomes a Linear4bit; the embedding, lm_head,
norms and biases stay dense (the bitsandbytes / transformers default). The loader
builds each Linear4bit empty on the meta device and quantizes its weight the moment
the full tensor has arrived, so a dense copy of the model never exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from phi_models.errors import PhiModelError

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
        name for name, module in model.named_modules() if name.startswith("model.layers.") and type(module) is nn.Linear
    ]


def empty_linear4bit(linear: nn.Linear, quant_type: str, double_quant: bool, compute_dtype: torch.dtype) -> nn.Module:
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
    if linear.out_features % 32 or linear.in_features % 64:
        from lora_core.linear4bit import keep_standard_4bit_layout

        # bitsandbytes' AVX512-BF16 inference repacking asserts on such shapes; use its plain CPU path.
        keep_standard_4bit_layout(module)
    return module


_CPU_CHUNK = 1 << 22  # elements per CPU quantization call; a multiple of every blocksize


def _rows_per_chunk(row_size: int, chunk: int, blocksize: int) -> int:
    """Rows per quantization call: about ``chunk`` elements, always whole 64-element blocks."""
    step = math.lcm(row_size, 2 * blocksize) // row_size  # rows that fill whole (even) blocks
    return max(step, (chunk // row_size) // step * step)


def quantize_4bit_chunked(
    read_rows: Callable[[int, int], torch.Tensor],
    shape: tuple[int, int],
    dtype: torch.dtype,
    quant_type: str,
    double_quant: bool,
    blocksize: int = 64,
    chunk: int = _CPU_CHUNK,
):
    """bitsandbytes' quantize_4bit of a (rows, cols) weight, computed a few rows at a time.

    ``read_rows(start, stop)`` returns those rows in ``dtype`` (straight from a safetensors
    slice, or from a tensor). bitsandbytes' CPU kernel holds ~16 bytes of temporaries per
    element (~400 MB for one phi-2 fc1); blockwise quantization is local to each 64-element
    block, so whole-block chunks give the identical packed data and absmax with a bounded
    transient, and no full-size dense copy is ever made. Double quantization then runs on
    the full absmax exactly as bitsandbytes does.
    """
    bnb = _bnb()
    functional = bnb.functional
    rows, cols = shape
    step = _rows_per_chunk(cols, chunk, blocksize)
    packed_parts, absmax_parts = [], []
    for start in range(0, rows, step):
        block = read_rows(start, min(rows, start + step)).reshape(-1)
        packed, absmax = torch.ops.bitsandbytes.quantize_4bit.default(block, blocksize, quant_type, torch.uint8)
        packed_parts.append(packed)
        absmax_parts.append(absmax)
    packed = torch.cat(packed_parts) if len(packed_parts) > 1 else packed_parts[0]
    absmax = torch.cat(absmax_parts) if len(absmax_parts) > 1 else absmax_parts[0]
    code = functional.get_4bit_type(quant_type, device=packed.device)
    common = dict(shape=torch.Size(shape), dtype=dtype, blocksize=blocksize, code=code, quant_type=quant_type)
    if not double_quant:
        return packed, functional.QuantState(absmax=absmax, **common)
    offset = absmax.mean()
    quantized_absmax, state2 = functional.quantize_blockwise(absmax - offset, blocksize=256)
    return packed, functional.QuantState(absmax=quantized_absmax, offset=offset, state2=state2, **common)


def set_quantized_weight(
    module: nn.Module,
    weight: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype | None = None,
    read_rows: Callable[[int, int], torch.Tensor] | None = None,
) -> None:
    """Quantize a dense (out, in) weight into ``module`` (a Linear4bit) on ``device``.

    Give the weight itself, or ``read_rows`` (start, stop) -> rows in ``dtype`` to stream it on CPU.
    """
    bnb = _bnb()
    quant_type = module.weight.quant_type
    double_quant = module.weight.compress_statistics
    if weight is not None:
        dtype = dtype or weight.dtype
        weight = weight.to(dtype)
    if device.type != "cpu":
        if weight is None:
            weight = read_rows(0, module.out_features)
        param = bnb.nn.Params4bit(
            weight, requires_grad=False, compress_statistics=double_quant, quant_type=quant_type, module=module
        )
        module.weight = param._quantize(device)
        return
    if read_rows is None:
        read_rows = lambda start, stop: weight[start:stop]  # noqa: E731
    shape = (module.out_features, module.in_features)
    packed, state = quantize_4bit_chunked(read_rows, shape, dtype, quant_type, double_quant)
    module.weight = bnb.nn.Params4bit(
        packed,
        requires_grad=False,
        quant_state=state,
        compress_statistics=double_quant,
        quant_type=quant_type,
        bnb_quantized=True,
        module=module,
    )
    module.quant_state = state


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
