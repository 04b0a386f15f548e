"""``--targets`` checked against the model's layer names before any data is tokenized or weight loaded.

The model is built on the meta device from its config.json (no memory, no weights), so a typo in
``--targets`` is reported in a moment, listing the distinct short names that can be targeted
(``qkv_proj``, ``q_proj`` (a slice), ``o_proj``, ...) instead of every per-layer path.
"""

from __future__ import annotations

import torch
from torch import nn

from phi_models import PhiConfig, PhiForCausalLM
from philora.training.errors import TrainingError
from philora.training.guidance import did_you_mean


def targetable_names(model: nn.Module) -> list[str]:
    """Full names of the layers LoRA can adapt, plus the virtual names of fused slices (``...q_proj``)."""
    from lora_core.inject import virtual_slice_name

    names = []
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Linear, nn.Embedding)):
            names.append(name)
            names += [virtual_slice_name(name, s) for s in (getattr(module, "lora_slices", None) or {})]
    return names


def short_names(names: list[str]) -> list[str]:
    """The distinct last components of ``names``, in first-seen order."""
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))


def meta_model(config: PhiConfig) -> nn.Module:
    """The module tree of a model with ``config`` (``ModelSource.config()``), on the meta device: no weights."""
    with torch.device("meta"):
        return PhiForCausalLM(config)


def check_targets(targets: list[str], model: nn.Module) -> None:
    """Raise one line naming each target that matches no layer, with the valid short names."""
    from lora_core.inject import make_matcher

    names = targetable_names(model)
    aliases = getattr(model, "lora_target_aliases", None)
    unknown = [t for t in targets if not any(make_matcher([t], aliases)(n) for n in names)]
    if unknown:
        valid = short_names(names)
        hints = "".join(did_you_mean(t, valid) for t in unknown if not t.startswith("re:"))
        verb = "matches" if len(unknown) == 1 else "match"
        raise TrainingError(
            f"--targets: {', '.join(unknown)} {verb} no layer of this model{hints}; "
            f"targetable names: {', '.join(valid)}"
        )
