"""loralib's utilities (freeze all but LoRA, LoRA-only state dict) and a trainable-parameter report."""

import torch
import torch.nn as nn

from lora_core.base import LoRALayer
from lora_core.errors import check_bias_mode


def mark_only_lora_as_trainable(model: nn.Module, bias: str = "none") -> None:
    """Freeze every parameter whose name lacks 'lora_'; bias='all' also trains every bias,
    bias='lora_only' the biases of LoRA layers (loralib's semantics)."""
    check_bias_mode(bias)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            param.requires_grad = False
    if bias == "all":
        for name, param in model.named_parameters():
            if "bias" in name:
                param.requires_grad = True
    elif bias == "lora_only":
        for module in model.modules():
            if isinstance(module, LoRALayer) and getattr(module, "bias", None) is not None:
                module.bias.requires_grad = True


def lora_state_dict(model: nn.Module, bias: str = "none") -> dict[str, torch.Tensor]:
    """The entries of model.state_dict() that hold LoRA parameters (keys containing 'lora_'),
    plus all biases (bias='all') or the biases of LoRA layers (bias='lora_only')."""
    check_bias_mode(bias)
    full = model.state_dict()
    if bias == "none":
        return {k: v for k, v in full.items() if "lora_" in k}
    if bias == "all":
        return {k: v for k, v in full.items() if "lora_" in k or "bias" in k}
    selected = {}
    for key, value in full.items():
        if "lora_" in key:
            selected[key] = value
            bias_key = key.split("lora_")[0] + "bias"
            if bias_key in full:
                selected[bias_key] = full[bias_key]
    return selected


def parameter_count(param: torch.Tensor) -> int:
    """Number of weights a parameter stands for: a bitsandbytes Params4bit packs two 4-bit
    weights per byte of storage, so its numel understates the weight count."""
    if type(param).__name__ == "Params4bit" and getattr(param, "bnb_quantized", False):
        return param.numel() * param.element_size() * 2
    return param.numel()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared parameters are counted once."""
    trainable = total = 0
    for param in model.parameters():  # parameters() already skips duplicates
        count = parameter_count(param)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def print_trainable_parameters(model: nn.Module) -> str:
    """Print and return 'trainable params: N || all params: M || trainable%: P'."""
    trainable, total = trainable_parameters(model)
    percent = 100.0 * trainable / total if total else 0.0
    line = f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {percent:.4f}"
    print(line)
    return line
