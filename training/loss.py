"""Next-token loss from hidden states, with the lm_head run only where a target exists, in chunks.

Full-vocabulary logits for a whole batch (B*T*V floats: 8*1024*51200*4 bytes = 1.7 GB for phi-2)
are never built. Only positions whose target is not -100 go through the head, ``chunk`` rows at a
time; for a frozen plain ``nn.Linear`` head the gradient of each chunk is computed right away and
its logits dropped, so the backward keeps one (N, D) tensor instead of any (N, V) one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from philora.data import IGNORE_INDEX  # the batch contract's 'no target' value, defined once in data


def count_targets(targets: torch.Tensor) -> int:
    """Number of positions that contribute to the loss (targets != -100)."""
    return int((targets != IGNORE_INDEX).sum())


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    """Summed cross entropy of ``hidden @ weight.T + bias`` against ``targets``; weight/bias frozen.

    The gradient w.r.t. ``hidden`` is (softmax - onehot) @ weight, computed chunk by chunk in the
    forward pass, so no logits outlive their chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):  # hidden (N, D), targets (N,)
        need_grad = ctx.needs_input_grad[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        # Two (chunk, V) buffers reused by every chunk: a fresh tensor that large costs more in page faults
        # than the pass that fills it. ``low`` holds the matmul's output and the gradient's input in the
        # weight's dtype when that is not fp32; the softmax always runs in fp32 ``logits``.
        rows = min(chunk, hidden.shape[0])
        logits_buffer = hidden.new_empty((rows, weight.shape[0]), dtype=torch.float32)
        low_buffer = None if weight.dtype == torch.float32 else hidden.new_empty((rows, weight.shape[0]))
        bias = bias.float() if bias is not None else None  # added in fp32, after the matmul
        for start in range(0, hidden.shape[0], chunk):
            stop = start + chunk
            target = targets[start:stop]
            n = target.shape[0]
            logits = logits_buffer[:n]  # (n, V)
            if low_buffer is None:
                torch.mm(hidden[start:stop], weight.t(), out=logits)
            else:
                torch.mm(hidden[start:stop], weight.t(), out=low_buffer[:n])
                logits.copy_(low_buffer[:n])
            if bias is not None:
                logits.add_(bias)
            target_logit = logits.gather(1, target[:, None]).squeeze(1)
            row_max = logits.amax(dim=-1, keepdim=True)
            # One pass of exp in place: the logits become unnormalized probabilities.
            probs = logits.sub_(row_max).exp_()
            row_sum = probs.sum(dim=-1, keepdim=True)
            total += (row_max.squeeze(1) + row_sum.squeeze(1).log() - target_logit).sum()
            if need_grad:
                probs.div_(row_sum)  # softmax
                probs[torch.arange(n, device=target.device), target] -= 1.0
                if low_buffer is not None:
                    probs = low_buffer[:n].copy_(probs)
                torch.mm(probs, weight, out=grad_hidden[start:stop])
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None, None


def _head_is_frozen_linear(head: nn.Module) -> bool:
    return type(head) is nn.Linear and not any(p.requires_grad for p in head.parameters())


def _checkpointed_chunk_loss(head: nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), target, reduction="sum")


def chunked_lm_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Sum (not mean) of next-token cross entropy over positions with ``targets != -100``.

    ``hidden`` is (B, T, D) from ``model.hidden_states``; ``targets`` (B, T) is already shifted
    (batch contract). Returns an fp32 scalar; divide by the number of target tokens of the whole
    accumulation window. Under autocast the head runs in the autocast dtype and the softmax in fp32.
    """
    mask = targets != IGNORE_INDEX
    picked = hidden[mask]  # (B, T, D) -> (N, D)
    picked_targets = targets[mask]  # (N,)
    if picked.shape[0] == 0:
        return picked.sum().float()
    if not _head_is_frozen_linear(head):
        # A trainable or quantized head: recompute each chunk's logits in backward instead of keeping them.
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, picked.shape[0], chunk):
            h, t = picked[start : start + chunk], picked_targets[start : start + chunk]
            if torch.is_grad_enabled() and h.requires_grad:
                total = total + checkpoint(_checkpointed_chunk_loss, head, h, t, use_reentrant=False)
            else:
                total = total + _checkpointed_chunk_loss(head, h, t)
        return total
    weight, bias = head.weight, head.bias
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        picked = picked.to(dtype)
        weight = weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    elif picked.dtype != weight.dtype:
        picked = picked.to(weight.dtype)
    with torch.autocast(device_type, enabled=False):
        return _FrozenHeadCrossEntropy.apply(picked, weight, bias, picked_targets, chunk)
