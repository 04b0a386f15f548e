"""Checkpoint key -> our parameter name, for HF-native and legacy (phi-msft, MixFormer) layouts.

Our tree equals transformers' except that phi-1.5/2 q/k/v live in one fused
``self_attn.qkv_proj``. HF-native phi checkpoints store q/k/v separately: each maps
to a *slot* of the fused tensor, and the loader concatenates the slots once all
three have arrived. Legacy ``Wqkv`` tensors are already [Q | K | V] and map whole
(no per-head permutation: docs/architecture.md, "Legacy checkpoint layouts").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phi_models.config import PhiConfig

QKV_SLOTS = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class Target:
    """Where a checkpoint tensor goes: parameter ``name``, or one ``slot`` of a fused parameter."""

    name: str
    slot: str | None = None


_HF_PHI_QKV = re.compile(r"^model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)$")
_MSFT_LAYER = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")
_MIXFORMER = re.compile(r"^layers\.(\d+)\.(.+)$")
_LAYER_RENAMES = {
    "ln.": "input_layernorm.",
    "mixer.Wqkv.": "self_attn.qkv_proj.",
    "mixer.out_proj.": "self_attn.dense.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}


def _legacy_layer(index: int, rest: str) -> Target | None:
    for old, new in _LAYER_RENAMES.items():
        if rest.startswith(old):
            return Target(f"model.layers.{index}.{new}{rest[len(old) :]}")
    return None


def map_key(key: str, config: PhiConfig) -> Target | None:
    """Our target for checkpoint ``key``; None for tensors to drop (rotary inv_freq).

    Unknown keys map to themselves, so the loader reports them as unexpected.
    """
    if key.endswith("rotary_emb.inv_freq"):
        return None
    if config.model_type != "phi":
        return Target(key)
    match = _HF_PHI_QKV.match(key)
    if match:
        layer, slot, kind = match.groups()
        return Target(f"model.layers.{layer}.self_attn.qkv_proj.{kind}", slot)
    if key == "transformer.embd.wte.weight":
        return Target("model.embed_tokens.weight")
    if key.startswith("lm_head.ln."):
        return Target("model.final_layernorm." + key[len("lm_head.ln.") :])
    if key.startswith("lm_head.linear."):
        return Target("lm_head." + key[len("lm_head.linear.") :])
    match = _MSFT_LAYER.match(key)
    if match:
        return _legacy_layer(int(match.group(1)), match.group(2)) or Target(key)
    match = _MIXFORMER.match(key)
    if match:
        # MixFormerSequential: block 0 is the embedding, blocks 1..L the layers, L+1 the head.
        block, rest = int(match.group(1)), match.group(2)
        if block == 0 and rest == "wte.weight":
            return Target("model.embed_tokens.weight")
        if block == config.num_hidden_layers + 1:
            if rest.startswith("ln."):
                return Target("model.final_layernorm." + rest[3:])
            if rest.startswith("linear."):
                return Target("lm_head." + rest[len("linear.") :])
        return _legacy_layer(block - 1, rest) or Target(key)
    return Target(key)
