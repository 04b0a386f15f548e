"""Rotary position embedding (GPT-NeoX half-split on the first r head dims) and LongRoPE.

LongRoPE (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini) divides each frequency by a
per-frequency factor: ``short_factor`` while every position of the pass is below
``original_max_position_embeddings``, ``long_factor`` otherwise (one set for the
whole pass, as transformers does), and scales cos and sin by the attention factor
at every length. How generation handles crossing the boundary: see generation.py.
"""

from __future__ import annotations

import torch
from torch import nn

from phi_models.config import PhiConfig


class RotaryEmbedding(nn.Module):
    """Computes (cos, sin) tables for given position ids; holds no parameters."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.rotary_dim = config.rotary_dim
        self.longrope = config.rope_type == "longrope"
        self.original_max = config.original_max_position_embeddings
        self.scale = config.longrope_attention_factor
        # Explicit CPU device: the model may be built under a meta-device context for loading,
        # and these small tables must hold real numbers either way.
        exponent = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device="cpu") / self.rotary_dim
        base = config.rope_theta**exponent
        if self.longrope:
            short = torch.tensor(config.short_factor, dtype=torch.float32, device="cpu")
            long = torch.tensor(config.long_factor, dtype=torch.float32, device="cpu")
            self._inv_freq = {"short": 1.0 / (short * base), "long": 1.0 / (long * base)}
        else:
            self._inv_freq = {"short": 1.0 / base}
        self._on_device: dict[tuple[str, torch.device], torch.Tensor] = {}

    def needs_long(self, position_ids: torch.Tensor) -> bool:
        """True when LongRoPE must use its long factors for these positions."""
        if not self.longrope:
            return False
        return int(position_ids.max()) + 1 > self.original_max

    def _inv(self, which: str, device: torch.device) -> torch.Tensor:
        key = (which, device)
        if key not in self._on_device:
            self._on_device[key] = self._inv_freq[which].to(device)
        return self._on_device[key]

    @torch.no_grad()
    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype, use_long: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, T, r) in ``dtype`` for position_ids (B, T)."""
        inv_freq = self._inv("long" if use_long else "short", position_ids.device)
        angles = position_ids[..., None].float() * inv_freq  # (B, T, r/2)
        angles = torch.cat((angles, angles), dim=-1)  # (B, T, r)
        cos, sin = angles.cos(), angles.sin()
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        return cos.to(dtype), sin.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first r dims of x (B, heads, T, hd) with cos/sin (B, T, r); the rest pass through."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, T, r) -> (B, 1, T, r)
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :r], x[..., r:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot) * sin, x_pass), dim=-1)
