"""Attention shared by every Phi variant: fused q/k/v, RoPE, masks, KV cache, SDPA.

Masks are built once per forward (``build_mask``) and shared by all layers. The
no-padding, no-document, no-window case uses SDPA's ``is_causal`` fast path with
no mask tensor at all; otherwise one boolean (B, 1, T, S) mask is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from phi_models.cache import KVCache
from phi_models.config import PhiConfig
from phi_models.rope import apply_rotary


@dataclass
class MaskSpec:
    """What SDPA needs to know about visibility: a boolean mask (True = may attend) or is_causal."""

    mask: torch.Tensor | None
    is_causal: bool


def window_visible_keys(config: PhiConfig) -> int | None:
    """How many keys (self included) a query sees under the sliding window, or None for no window."""
    if config.sliding_window is None:
        return None
    return config.sliding_window + (1 if config.sliding_window_mode == "w+1" else 0)


def build_mask(
    *,
    num_queries: int,
    past: int,
    key_mask: torch.Tensor | None,
    document_ids: torch.Tensor | None,
    window: int | None,
    device: torch.device,
) -> MaskSpec:
    """Combine causal order, key padding (B, S), packed documents (B, T) and a sliding window."""
    total = past + num_queries
    padded = key_mask is not None and not bool(key_mask.all())
    windowed = window is not None and total > window
    if not padded and document_ids is None and not windowed:
        if past == 0:
            return MaskSpec(None, is_causal=num_queries > 1)
        if num_queries == 1:
            return MaskSpec(None, is_causal=False)
    query_index = torch.arange(past, total, device=device)[:, None]  # (T, 1)
    key_index = torch.arange(total, device=device)[None, :]  # (1, S)
    allowed = key_index <= query_index  # (T, S)
    if windowed:
        allowed = allowed & (key_index > query_index - window)
    allowed = allowed[None]  # (1, T, S)
    if padded:
        allowed = allowed & key_mask[:, None, :]  # (B, T, S)
    if document_ids is not None:
        same_doc = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T); past == 0 here
        allowed = allowed & same_doc
    # Every query keeps its own key, so a padding row never softmaxes over nothing (NaN).
    allowed = allowed | (key_index == query_index)[None]
    return MaskSpec(allowed[:, None], is_causal=False)  # (B, 1, T, S)


def _would_run_in_fp16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True when SDPA on these tensors would compute in fp16: an fp16 input, or fp16 autocast.

    Under autocast a check of q.dtype misses it: the Linear gives fp16 q/k/v, but RoPE's fp32
    cos/sin promote q and k back to fp32, and autocast then casts all three to fp16 in SDPA.
    """
    device = q.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16:
        return True
    return torch.float16 in (q.dtype, k.dtype, v.dtype)


class FusedQKVAttention(nn.Module):
    """Self-attention with one fused q/k/v projection; subclasses add the output projection."""

    def __init__(self, config: PhiConfig, layer_idx: int, bias: bool, upcast_scores: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.upcast_scores = upcast_scores
        slices = config.qkv_slices
        self.split_sizes = list(slices.values())
        self.qkv_proj = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=bias)
        self.qkv_proj.lora_slices = dict(slices)

    def output_projection(self) -> nn.Module:
        raise NotImplementedError

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: MaskSpec,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """hidden (B, T, D) -> attention output after the output projection (B, T, D)."""
        B, T, _ = hidden.shape
        q, k, v = self.qkv_proj(hidden).split(self.split_sizes, dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, H, hd) -> (B, H, T, hd)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, T, K, hd) -> (B, K, T, hd)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        if self.upcast_scores and _would_run_in_fp16(q, k, v):
            # phi-2's q.k^T overflows fp16 (docs/architecture.md, "phi-2 in fp16"): score and softmax in fp32.
            # Autocast disabled for this call, or SDPA (on its lower-precision list) would cast back.
            with torch.autocast(q.device.type, enabled=False):
                out = self._sdpa(q.float(), k.float(), v.float(), mask).to(torch.float16)
        else:
            out = self._sdpa(q, k, v, mask)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B,H,T,hd)->(B,T,H*hd)
        return self.output_projection()(out)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask.mask,
            is_causal=mask.is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
