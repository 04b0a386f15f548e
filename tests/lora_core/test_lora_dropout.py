"""LoRADropout: nn.Dropout semantics with the cheaper CPU mask that inject turns on."""

import torch
import torch.nn as nn

import lora_core
from lora_core.dropout import LoRADropout, dropout_unscaled, keep_mask


def test_keep_mask_rate_and_independence():
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([2000, 1001]), 0.05)  # not a multiple of 4: the last int64 is partly used
    assert mask.shape == (2000, 1001) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.95) < 2e-3  # 2M draws: std ~1.5e-4
    flat = mask.flatten()[:2_000_000].float()
    # The four int16 quarters of one int64 draw must be independent: neighbours uncorrelated.
    for lag in (1, 2, 3):
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
        assert abs(corr) < 5e-3, lag
    assert keep_mask(torch.Size([7]), 0.0).all()
    assert keep_mask(torch.Size([1_000_000]), 0.999999).any()  # p < 1 never drops everything


def test_keep_mask_follows_the_torch_seed():
    torch.manual_seed(3)
    first = keep_mask(torch.Size([5, 9]), 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask(torch.Size([5, 9]), 0.3))


def test_fast_dropout_is_dropout():
    drop = LoRADropout(0.25, fast_mask=True)
    assert isinstance(drop, nn.Dropout)
    x = torch.randn(64, 300, requires_grad=True)
    y = drop(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)  # kept values scaled by 1/(1-p)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    drop.eval()
    assert drop(x) is x


def test_unscaled_times_factor_equals_forward():
    x = torch.randn(16, 40)
    for fast in (True, False):
        drop = LoRADropout(0.1, fast_mask=fast)
        torch.manual_seed(1)
        zeroed, factor = dropout_unscaled(drop, x)
        torch.manual_seed(1)
        torch.testing.assert_close(zeroed * factor, drop(x))
    assert dropout_unscaled(nn.Identity(), x) == (x, 1.0)


def test_inject_turns_the_fast_mask_on_and_loralib_constructors_keep_it_off():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    lora_core.inject(model, ["0"], r=2, lora_dropout=0.1)
    assert model[0].lora_dropout.fast_mask
    lora_core.inject(model, ["1"], r=2, lora_dropout=0.1, fast_dropout=False)
    assert not model[1].lora_dropout.fast_mask
    # loralib's own classes draw nn.Dropout's masks, so loralib programs train bit-identically.
    layer = lora_core.Linear(8, 8, r=2, lora_dropout=0.1)
    x = torch.randn(4, 8)
    torch.manual_seed(0)
    ours = layer.lora_dropout(x)
    torch.manual_seed(0)
    assert torch.equal(ours, nn.functional.dropout(x, 0.1, True))


def test_fast_dropout_lora_output_matches_explicit_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    lora_core.inject(model, ["0"], r=4, lora_alpha=8, lora_dropout=0.2)
    layer = model[0]
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 12)
    torch.manual_seed(5)
    out = layer(x)
    torch.manual_seed(5)
    dropped = x * keep_mask(x.shape, 0.2) / 0.8
    expected = nn.functional.linear(x, layer.weight, layer.bias) + dropped @ layer.lora_A.T @ layer.lora_B.T * 2.0
    torch.testing.assert_close(out, expected)
