"""The chunked lm_head loss equals plain full-logits cross entropy, in value and in gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from philora.training.loss import chunked_lm_loss, count_targets


def _case(bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(16, 50, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 16, generator=g))
        if bias:
            head.bias.copy_(torch.randn(50, generator=g))
    head.requires_grad_(False)
    hidden = torch.randn(3, 7, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7), generator=g)
    targets[0, :3] = -100
    targets[2, 5:] = -100
    return head, hidden, targets


def _reference(head, hidden, targets):
    logits = head(hidden)  # (B, T, V)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_frozen_head_matches_full_logits_fp32(bias, chunk):
    head, hidden, targets = _case(bias)
    ref = _reference(head, hidden, targets)
    (ref_grad,) = torch.autograd.grad(ref * 0.37, hidden)
    out = chunked_lm_loss(head, hidden, targets, chunk=chunk)
    (grad,) = torch.autograd.grad(out * 0.37, hidden)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)


def test_trainable_head_uses_checkpointed_chunks_and_matches():
    head, hidden, targets = _case(True)
    head.requires_grad_(True)
    ref = _reference(head, hidden, targets)
    ref_grads = torch.autograd.grad(ref, [hidden, head.weight])
    out = chunked_lm_loss(head, hidden, targets, chunk=5)
    grads = torch.autograd.grad(out, [hidden, head.weight])
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 5])  # 16 targets: equal chunks, and a shorter last chunk
def test_bf16_autocast_close_to_fp32(chunk):
    head, hidden, targets = _case(True)
    ref = _reference(head, hidden, targets)
    (ref_grad,) = torch.autograd.grad(ref, hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_lm_loss(head, hidden, targets, chunk=chunk)
    (grad,) = torch.autograd.grad(out, hidden)
    assert out.dtype == torch.float32 and grad.dtype == torch.float32
    assert abs(out.item() - ref.item()) / ref.item() < 2e-2
    # bf16 inputs and weights (8 mantissa bits): the gradient within a few percent of its scale
    assert (grad - ref_grad).abs().max() < 3e-2 * ref_grad.abs().max()


def test_no_targets_gives_zero_with_a_graph():
    head, hidden, targets = _case(False)
    targets.fill_(-100)
    out = chunked_lm_loss(head, hidden, targets)
    out.backward()
    assert out.item() == 0.0 and count_targets(targets) == 0
    assert torch.count_nonzero(hidden.grad) == 0


def test_count_targets():
    assert count_targets(torch.tensor([[1, -100, 3], [-100, -100, 0]])) == 3
