"""LoRA input dropout with an optional cheaper CPU mask.

On CPU, ``nn.Dropout`` draws its mask with ``bernoulli_``: one Mersenne-Twister draw plus a float
transform per element, a visible share of a CPU LoRA step. With
``fast_mask`` the mask comes from 64-bit random integers split into four 16-bit quarters, each
compared with an integer threshold: no float transform, a quarter of the draws (figures in
docs/performance.md). Semantics stay those of ``nn.Dropout`` (independent per element, kept values
scaled by 1/(1-p)); the drop probability is resolved to 2**-16 (p = 0.05 drops with probability
0.050003). Draws come from torch's default CPU generator, so
``torch.manual_seed`` and RNG-state checkpoints reproduce masks exactly; only the particular mask
for a given seed differs from ``nn.Dropout``'s. That is why it is opt-in: layers built with the
loralib constructors (``lora.Linear(..., lora_dropout=0.1)``) keep ``nn.Dropout``'s masks and so
train bit-identically to loralib, while ``inject`` (lora_core's own API, what training uses) turns
it on. CUDA and other devices always use ``nn.Dropout``'s own Philox kernel.
"""

import torch
import torch.nn as nn

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Boolean CPU mask of `shape`, each element True (kept) with probability 1 - p, independently.

    One int64 draw, uniform over (nearly) all 2**64 values, gives four independent uniform int16
    quarters; a quarter is kept when it is >= INT16_MIN + round(p * 2**16) (so p < 1 keeps some).
    """
    n = 1
    for size in shape:
        n *= size
    # random_(from, to) samples [from, to): the full signed range bar one value (2**-64 bias).
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(_INT64_MIN, _INT64_MAX)
    quarters = bits.view(torch.int16)[:n].view(shape)  # (ceil(n/4),) int64 -> (n,) int16 -> shape
    return quarters >= -(2**15) + min(round(p * 2**16), 2**16 - 1)


def _zero_dropped(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # where(), not x * keep: a bool * bf16 product casts the mask to a full bf16 temporary in
    # forward and again in backward; where's backward is where(keep, grad, 0) with no cast.
    return torch.where(keep, x, 0.0)


class LoRADropout(nn.Dropout):
    """``nn.Dropout`` (same state and behaviour); with ``fast_mask`` its CPU masks come from
    :func:`keep_mask`, and LoRA layers fold its 1/(1-p) into their rank-r scaling (``unscaled``)."""

    def __init__(self, p: float = 0.5, inplace: bool = False, fast_mask: bool = False):
        super().__init__(p=p, inplace=inplace)
        self.fast_mask = fast_mask

    def _fast(self, x: torch.Tensor) -> bool:
        # Under torch.compile the compiler's own fused dropout beats an eager mask (and traces).
        return (
            self.fast_mask
            and self.training
            and self.p > 0.0
            and not self.inplace
            and x.device.type == "cpu"
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast(x):
            return super().forward(x)
        return _zero_dropped(x, keep_mask(x.shape, self.p)).mul_(1.0 / (1.0 - self.p))

    def unscaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(x with the dropped elements zeroed, the factor still owed), so ``forward(x) == a * b``.

        With ``fast_mask`` off this is ``(forward(x), 1.0)``: nn.Dropout's exact masks and rounding.

        LoRA callers fold the factor 1/(1-p) into their (..., r)-sized scaling instead of paying
        a full-width multiply forward and backward; the result is the same up to rounding.
        """
        if not self._fast(x):
            return self(x), 1.0
        return _zero_dropped(x, keep_mask(x.shape, self.p)), 1.0 / (1.0 - self.p)


def dropout_unscaled(dropout: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``dropout`` applied to x as (zeroed x, factor owed); any module works (factor 1 for others)."""
    if isinstance(dropout, LoRADropout):
        return dropout.unscaled(x)
    return dropout(x), 1.0
