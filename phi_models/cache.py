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

    # ---- batch surgery (continuous batching: rows leave and join between decoding steps) ----------

    def _full_mask(self) -> torch.Tensor:
        if self.key_mask is not None:
            return self.key_mask
        like = next(k for k in self._keys if k is not None)
        return torch.ones(like.shape[0], self.length, dtype=torch.bool, device=like.device)

    def select_rows(self, rows: list[int]) -> None:
        """Keep only batch rows ``rows`` (in that order), then drop leading columns no kept row uses."""
        index = torch.tensor(rows, dtype=torch.long, device=self.next_positions.device)
        self.key_mask = self._full_mask().index_select(0, index)
        self.next_positions = self.next_positions.index_select(0, index)
        for i in range(self.num_layers):
            self._keys[i] = self._keys[i].index_select(0, index)
            self._values[i] = self._values[i].index_select(0, index)
        used = self.key_mask.any(0)  # (S,) a column some row still attends to
        first = int(used.int().argmax()) if bool(used.any()) else self.length
        if first:
            self._drop_front(first)

    def _drop_front(self, n: int) -> None:
        for i in range(self.num_layers):
            self._keys[i] = self._keys[i][:, :, n:].clone()
            self._values[i] = self._values[i][:, :, n:].clone()
        self.key_mask = self.key_mask[:, n:]
        self.length -= n

    @staticmethod
    def concat(caches: list[KVCache], headroom: int = 64) -> KVCache:
        """One cache holding the rows of ``caches`` (in order), each left-padded to the longest.

        Padding columns are zero keys/values with a False key mask, so a row attends to exactly the
        keys it had. All caches must come from the same model and agree on ``rope_long``.
        """
        first = caches[0]
        if len({c.rope_long for c in caches}) > 1:
            raise ValueError("caches rotated with different LongRoPE factor sets cannot be joined")
        length = max(c.length for c in caches)
        joined = KVCache(first.num_layers, first.capacity_hint)
        joined.length, joined.rope_long, joined.ids_checked = length, first.rope_long, first.ids_checked
        masks = [torch.nn.functional.pad(c._full_mask(), (length - c.length, 0), value=False) for c in caches]
        joined.key_mask = torch.cat(masks, dim=0)
        joined.next_positions = torch.cat([c.next_positions for c in caches], dim=0)
        for i in range(first.num_layers):
            for name in ("_keys", "_values"):
                parts = [getattr(c, name)[i] for c in caches]
                B = sum(p.shape[0] for p in parts)
                K, hd = parts[0].shape[1], parts[0].shape[3]
                buf = parts[0].new_zeros(B, K, length + headroom, hd)  # zeros: padding never turns into NaN
                row = 0
                for c, p in zip(caches, parts):
                    buf[row : row + p.shape[0], :, length - c.length : length] = p[:, :, : c.length]
                    row += p.shape[0]
                getattr(joined, name)[i] = buf
        return joined
