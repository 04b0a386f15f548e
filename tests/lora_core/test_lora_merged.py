"""MergedLinear: unequal slices equal separate lora.Linear adapters; no full delta-W per call."""

import pytest
import torch

import lora_core as lora
import lora_core.merged as lora_merged


def _separate_from_fused(fused: lora.MergedLinear):
    """Separate lora.Linear layers over the row slices of `fused`, sharing its numbers."""
    pieces = []
    for info in fused.slice_info():
        rows = slice(info["start"], info["start"] + info["size"])
        piece = lora.Linear(
            fused.in_features, info["size"], r=fused.r if info["enabled"] else 0, lora_alpha=fused.lora_alpha
        )
        with torch.no_grad():
            piece.weight.copy_(fused.weight[rows])
            piece.bias.copy_(fused.bias[rows])
            if info["enabled"]:
                piece.lora_A.copy_(fused.lora_A[slice(*info["lora_A_rows"])])
                piece.lora_B.copy_(fused.lora_B[slice(*info["lora_B_rows"])])
        pieces.append(piece)
    return pieces


@pytest.mark.parametrize("enable", [[True, True, True], [True, False, True], [False, True, False]])
def test_unequal_slices_equal_separate_adapters(enable):
    torch.manual_seed(0)
    fused = lora.MergedLinear(32, 48, r=4, lora_alpha=8, enable_lora=enable, slice_sizes=(32, 8, 8))
    with torch.no_grad():
        fused.lora_B.normal_()
    assert fused.lora_A.shape == (4 * sum(enable), 32)
    assert fused.lora_B.shape == (sum(s for s, e in zip((32, 8, 8), enable) if e), 4)
    x = torch.randn(2, 7, 32)
    pieces = _separate_from_fused(fused)
    expected = torch.cat([piece(x) for piece in pieces], dim=-1)
    torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
    fused.eval()
    for piece in pieces:
        piece.eval()
    torch.testing.assert_close(fused(x), torch.cat([piece(x) for piece in pieces], dim=-1), atol=1e-5, rtol=1e-5)


def test_gradients_match_separate_adapters():
    torch.manual_seed(0)
    fused = lora.MergedLinear(16, 24, r=2, enable_lora=[True, False, True], slice_sizes=(16, 4, 4))
    with torch.no_grad():
        fused.lora_B.normal_()
    pieces = _separate_from_fused(fused)
    x = torch.randn(5, 16)
    target = torch.randn(5, 24)
    (fused(x) - target).pow(2).sum().backward()
    (torch.cat([p(x) for p in pieces], -1) - target).pow(2).sum().backward()
    torch.testing.assert_close(fused.lora_A.grad, torch.cat([pieces[0].lora_A.grad, pieces[2].lora_A.grad]))
    torch.testing.assert_close(fused.lora_B.grad, torch.cat([pieces[0].lora_B.grad, pieces[2].lora_B.grad]))


@pytest.mark.parametrize("enable", [[True, True, True], [False, True, True]])
def test_forward_never_builds_full_delta_weight(monkeypatch, enable):
    fused = lora.MergedLinear(16, 24, r=2, enable_lora=enable, slice_sizes=(8, 8, 8))

    def forbidden(*args):
        raise AssertionError("forward built the full delta-W or the (out, r*n) block matrix")

    monkeypatch.setattr(lora.MergedLinear, "delta_weight", forbidden)
    # Forward runs each slice through its own B_g; the mostly-zero block matrix is for merging only.
    monkeypatch.setattr(lora_merged, "block_lora_B", forbidden)
    fused(torch.randn(3, 16)).sum().backward()
    assert fused.lora_A.grad is not None and fused.lora_B.grad is not None


def test_equal_split_default_matches_loralib_shapes():
    fused = lora.MergedLinear(8, 12, r=2, enable_lora=[True, False, True])
    assert fused.slice_sizes == (4, 4, 4)
    assert fused.lora_A.shape == (4, 8) and fused.lora_B.shape == (8, 2)
    assert fused.lora_ind.tolist() == [True] * 4 + [False] * 4 + [True] * 4
