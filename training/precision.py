"""Precision modes: which autocast to run under, whether a grad scaler is needed, the base dtype."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from phi_models import parse_dtype  # one table of dtype names, shared with the model loader
from philora.training.errors import TrainingError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the device runs it natively (else fp16 on old GPUs, fp32 on old CPUs).

    fp16 on CPU is an error: its grad scaler is CUDA-only and CPU fp16 kernels are slow.
    """
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TrainingError(
            "--precision fp16 needs a CUDA device (its grad scaler is CUDA-only); on CPU use --precision bf16 or fp32"
        )
    return name


@dataclass
class Precision:
    """A resolved precision mode on a device."""

    name: str  # bf16 | fp16 | fp32
    device: torch.device

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype matmuls run in."""
        return parse_dtype(self.name)

    def autocast(self):
        """Context for forward passes: autocast for bf16/fp16, nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def make_scaler(self):
        """A GradScaler for fp16 (bf16's range needs none), else None."""
        if self.name == "fp16":
            return torch.amp.GradScaler(self.device.type)
        return None


def base_dtype(dtype: str, precision: Precision) -> torch.dtype:
    """dtype for the frozen base weights.

    ``auto`` stores the frozen base in the compute dtype: under bf16 autocast a bf16 base avoids a
    cast of every weight on every forward (the fastest correct choice on CPU and GPU), and
    gradients only flow through the fp32 LoRA factors. A 4-bit base takes the compute dtype for
    its non-quantized parts too.
    """
    chosen = parse_dtype(dtype, default=precision.compute_dtype)  # "auto" -> the compute dtype
    if dtype != "auto" and chosen == torch.float16 and precision.device.type != "cuda":
        raise TrainingError("--dtype fp16 is only supported on CUDA; on CPU use --dtype bf16 or fp32")
    return chosen
