"""KV cache for incremental decoding: preallocated per-layer buffers that grow by doubling."""

from __future__ import annotations

import torch


class KVCache:
    """Keys/values of every layer (after RoPE), the key padding mask and each row's next position.

    A model forward writes its new keys at ``[length, length + T)`` in every layer and then
    calls ``advance``; buffers grow geometrically so decoding does not re-copy the cache per token.
    ``rope_long`` records which LongRoPE factor set rotated the cached keys (None: not yet known).
    ``ids_checked`` True says the owner range-checked every id it feeds (generate does, once, at its
    boundary), so the model skips its per-forward check, a host synchronisation each step.
    """

    def __init__(self, num_layers: int, capacity: int = 0):
        self.num_layers = num_layers
        self.capacity_hint = capacity
        self.length = 0
        self._keys: list[torch.Tensor | None] = [None] * num_layers
        self._values: list[torch.Tensor | None] = [None] * num_layers
        self.key_mask: torch.Tensor | None = None  # (B, length) bool, True = real token
        self.next_positions: torch.Tensor | None = None  # (B,) position of each row's next token
        self.rope_long: bool | None = None
        self.ids_checked = False

    def _grow(self, buf: torch.Tensor | None, like: torch.Tensor, needed: int) -> torch.Tensor:
        if buf is not None and buf.shape[2] >= needed:
            return buf
        old = 0 if buf is None else buf.shape[2]
        size = max(needed, 2 * old, self.capacity_hint, 16)
        B, K, _, hd = like.shape
        fresh = like.new_empty(B, K, size, hd)
        if buf is not None:
            fresh[:, :, : self.length] = buf[:, :, : self.length]
        return fresh

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append key/value (B, K, T, hd) of one layer; return all keys/values so far (B, K, S, hd)."""
        end = self.length + key.shape[2]
        self._keys[layer] = keys = self._grow(self._keys[layer], key, end)
        self._values[layer] = values = self._grow(self._values[layer], value, end)
        keys[:, :, self.length : end] = key
        values[:, :, self.length : end] = value
        return keys[:, :, :end], values[:, :, :end]

    def extend_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Append the new tokens' padding mask (B, T) and return the mask over all keys (B, S)."""
        new_mask = new_mask.bool()
        if self.key_mask is None:
            if self.length:
                past = torch.ones(new_mask.shape[0], self.length, dtype=torch.bool, device=new_mask.device)
                return torch.cat((past, new_mask), dim=1)
            return new_mask
        return torch.cat((self.key_mask, new_mask), dim=1)

    def advance(self, num_tokens: int, key_mask: torch.Tensor | None, last_positions: torch.Tensor) -> None:
        """Commit a forward of ``num_tokens`` tokens (called once per model forward, after all layers)."""
        self.length += num_tokens
        self.key_mask = key_mask
        self.next_positions = last_positions + 1

    def reset(self) -> None:
        """Forget everything (used when LongRoPE switches factor sets mid-generation)."""
        ids_checked = self.ids_checked
        self.__init__(self.num_layers, self.capacity_hint)
        self.ids_checked = ids_checked
