"""Phi-3 family blocks (Phi-3, 3.5, 4-mini, phi-4): sequential pre-norm with RMSNorm, fused qkv and gate_up."""

from __future__ import annotations

import torch
from torch import nn

from phi_models.attention import FusedQKVAttention, MaskSpec
from phi_models.cache import KVCache
from phi_models.config import PhiConfig
from phi_models.phi import activation


class RMSNorm(nn.Module):
    """Statistic in fp32, cast back to the input dtype, then times the weight (as transformers does)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class Phi3Attention(FusedQKVAttention):
    """Fused ``qkv_proj`` laid out [Q | K | V] (GQA heads grouped contiguously), output ``o_proj``."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__(config, layer_idx, bias=False, upcast_scores=False)
        self.o_proj = nn.Linear(config.num_attention_heads * config.head_dim, config.hidden_size, bias=False)

    def output_projection(self) -> nn.Module:
        return self.o_proj


class Phi3MLP(nn.Module):
    """down(up * silu(gate)); the first I rows of ``gate_up_proj`` are the gate."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * size, bias=False)
        self.gate_up_proj.lora_slices = {"gate_proj": size, "up_proj": size}
        self.down_proj = nn.Linear(size, config.hidden_size, bias=False)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(hidden).chunk(2, dim=-1)
        return self.down_proj(up * self.act(gate))


class Phi3DecoderLayer(nn.Module):
    """x += attn(RMS(x)); x += mlp(RMS(x))."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.self_attn = Phi3Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = Phi3MLP(config)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_mlp_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: MaskSpec, cache: KVCache | None = None
    ) -> torch.Tensor:
        x = x + self.resid_attn_dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache))
        return x + self.resid_mlp_dropout(self.mlp(self.post_attention_layernorm(x)))
