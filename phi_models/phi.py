"""phi-1.5 / phi-2 blocks: one LayerNorm feeding attention and MLP in parallel, biases everywhere."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from phi_models.attention import FusedQKVAttention, MaskSpec
from phi_models.cache import KVCache
from phi_models.config import PhiConfig


def activation(name: str):
    """The elementwise activation for a config ``hidden_act`` name."""
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    return F.silu


class PhiAttention(FusedQKVAttention):
    """q/k/v computed by one fused ``qkv_proj`` (HF's q_proj/k_proj/v_proj are its slices); output ``dense``."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__(config, layer_idx, bias=True, upcast_scores=True)
        self.dense = nn.Linear(config.num_attention_heads * config.head_dim, config.hidden_size, bias=True)

    def output_projection(self) -> nn.Module:
        return self.dense


class PhiMLP(nn.Module):
    """fc2(gelu_tanh(fc1(h)))."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden)))


class PhiDecoderLayer(nn.Module):
    """x + dropout(attn(LN(x))) + dropout(mlp(LN(x)))."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.self_attn = PhiAttention(config, layer_idx)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: MaskSpec, cache: KVCache | None = None
    ) -> torch.Tensor:
        h = self.input_layernorm(x)
        attn = self.resid_dropout(self.self_attn(h, cos, sin, mask, cache))
        return x + attn + self.resid_dropout(self.mlp(h))
