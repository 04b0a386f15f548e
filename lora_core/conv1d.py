"""LoRA on transformers' `Conv1D` (GPT-2, GPT-J-style checkpoints): a linear layer whose weight is
stored (in, out).

It is loralib's `Linear(..., fan_in_fan_out=True)` layout: lora_A (r, in), lora_B (out, r), the
update transposed before it meets the (in, out) weight. transformers is imported only when a
model already uses it; the LoRA class is built on first use (`LoRAConv1D`, reachable as an
attribute of this module so pickled models load again).
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn

from lora_core.adapters import add_adapter_outputs
from lora_core.base import LoRALayer
from lora_core.layers import Linear, low_rank_output

_CLASSES: dict = {}


def conv1d_class():
    """transformers' Conv1D class, or None when transformers is not loaded (then no model has one)."""
    utils = sys.modules.get("transformers.pytorch_utils")
    return getattr(utils, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    """True for a transformers Conv1D (LoRA-adapted or not)."""
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


class _Conv1DLoRA(LoRALayer):
    """LoRA over a transformers Conv1D: the base runs Conv1D's own addmm, the low-rank path as in
    lora_core.Linear; merging adds the transposed update to the (in, out) weight."""

    _create_lora_parameters = Linear._create_lora_parameters
    reset_lora_parameters = Linear.reset_lora_parameters
    _weight_as_out_in = Linear._weight_as_out_in
    delta_weight = Linear.delta_weight

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)  # Conv1D's own __repr__ would hide the LoRA children

    def extra_repr(self) -> str:
        lora = LoRALayer.extra_repr(self)
        return f"nf={self.nf}, nx={self.nx}" + (f", {lora}" if lora else "")

    def plain_class(self) -> type:
        """The transformers class merge_and_unload puts back (weight kept (in, out))."""
        return conv1d_class()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = conv1d_class().forward(self, x)
        if self.lora_active():
            result = result + low_rank_output(self, x, result.dtype)
        return add_adapter_outputs(self, x, result)


def lora_conv1d_class() -> type:
    """The LoRA class for transformers' Conv1D, created once."""
    if "LoRAConv1D" not in _CLASSES:
        _CLASSES["LoRAConv1D"] = type(
            "LoRAConv1D", (_Conv1DLoRA, conv1d_class()), {"__module__": __name__, "__doc__": _Conv1DLoRA.__doc__}
        )
    return _CLASSES["LoRAConv1D"]


def make_lora_conv1d(module: nn.Module, merge_weights: bool = False) -> nn.Module:
    """Turn a Conv1D into a LoRA layer in place, with no adapter yet (r = 0)."""
    module.__class__ = lora_conv1d_class()
    LoRALayer.__init__(module, r=0, lora_alpha=1, lora_dropout=0.0, merge_weights=merge_weights)
    module.in_features, module.out_features = module.weight.shape  # (in, out)
    module.fan_in_fan_out = True
    return module


def __getattr__(name: str):
    # Lets pickle find the lazily built class.
    if name == "LoRAConv1D":
        import transformers.pytorch_utils  # noqa: F401

        return lora_conv1d_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
