"""Exact merge/unmerge, loralib's merge-on-eval, load_state_dict while merged, disable_adapters,
merge_and_unload."""

import pytest
import torch
import torch.nn as nn

import lora_core as lora


def _randomize_lora(module, std=0.3):
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.normal_(0, std)


BUILDERS = {
    "linear": (lambda dt: lora.Linear(24, 16, r=4, lora_alpha=8, dtype=dt), lambda dt: torch.randn(3, 24, dtype=dt)),
    "linear_fan_in_fan_out": (
        lambda dt: lora.Linear(24, 16, r=4, fan_in_fan_out=True, dtype=dt),
        lambda dt: torch.randn(3, 24, dtype=dt),
    ),
    "rslora": (lambda dt: lora.Linear(24, 16, r=4, use_rslora=True, dtype=dt), lambda dt: torch.randn(3, 24, dtype=dt)),
    "dora": (lambda dt: lora.Linear(24, 16, r=4, use_dora=True, dtype=dt), lambda dt: torch.randn(3, 24, dtype=dt)),
    "embedding": (lambda dt: lora.Embedding(40, 16, r=4, dtype=dt), lambda dt: torch.randint(0, 40, (3, 5))),
    "merged": (
        lambda dt: lora.MergedLinear(24, 20, r=2, enable_lora=[True, False, True], slice_sizes=(12, 4, 4), dtype=dt),
        lambda dt: torch.randn(3, 24, dtype=dt),
    ),
    "conv2d": (lambda dt: lora.Conv2d(3, 8, 3, r=2, dtype=dt), lambda dt: torch.randn(2, 3, 6, 6, dtype=dt)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_100_merge_unmerge_cycles_are_bit_exact(kind, dtype):
    torch.manual_seed(0)
    build, make_input = BUILDERS[kind]
    layer = build(dtype)
    _randomize_lora(layer)
    owner = layer._weight_owner()
    before = owner.weight.detach().clone()
    x = make_input(dtype)
    unmerged_out = layer(x).detach()
    for cycle in range(100):
        if cycle % 2:
            layer.eval()  # loralib's route: merge_weights=True merges on eval ...
            layer.train()  # ... and unmerges on train
        else:
            lora.merge(layer)
            assert layer.merged and not torch.equal(owner.weight, before)
            lora.unmerge(layer)
        assert torch.equal(owner.weight, before), f"weight drifted after cycle {cycle}"
    assert torch.equal(layer(x), unmerged_out)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_merged_forward_equals_unmerged_forward(kind):
    torch.manual_seed(0)
    build, make_input = BUILDERS[kind]
    layer = build(torch.float32)
    _randomize_lora(layer)
    x = make_input(torch.float32)
    expected = layer(x)
    lora.merge(layer)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_load_state_dict_into_merged_module_unmerges_first():
    torch.manual_seed(0)
    layer = lora.Linear(8, 8, r=2)
    pristine = layer.weight.detach().clone()
    _randomize_lora(layer)
    layer.eval()
    assert layer.merged
    other = lora.Linear(8, 8, r=2)
    _randomize_lora(other)
    layer.load_state_dict(lora.lora_state_dict(other), strict=False)  # loralib issue #190
    assert not layer.merged and torch.equal(layer.weight, pristine)
    x = torch.randn(4, 8)
    expected = x @ (pristine + other.lora_B @ other.lora_A * other.scaling).T + layer.bias
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.train()
    assert torch.equal(layer.weight, pristine)


def test_moving_a_merged_layer_keeps_it_exact():
    torch.manual_seed(0)
    layer = lora.Linear(8, 8, r=2)
    _randomize_lora(layer)
    pristine = layer.weight.detach().clone()
    lora.merge(layer)
    layer.to(torch.float64)
    assert layer.merged and layer.weight.dtype == torch.float64
    lora.unmerge(layer)
    assert torch.equal(layer.weight, pristine.double())


def test_disable_adapters_gives_base_outputs_and_restores_merge_state():
    torch.manual_seed(0)
    model = nn.Sequential(lora.Linear(8, 8, r=2), nn.Tanh(), lora.Linear(8, 4, r=2))
    _randomize_lora(model)
    x = torch.randn(3, 8)
    base = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    base.load_state_dict(model.state_dict(), strict=False)
    adapted = model(x)
    lora.merge(model)
    with lora.disable_adapters(model):
        torch.testing.assert_close(model(x), base(x))
        assert not model[0].merged
    assert model[0].merged and model[2].merged
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)


def test_merge_and_unload_gives_plain_modules_with_same_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        lora.Embedding(30, 8, r=2),
        lora.Linear(8, 12, r=2, fan_in_fan_out=True),
        lora.MergedLinear(12, 12, r=2, enable_lora=[True, False, True]),
        nn.ReLU(),
        lora.Linear(12, 6, r=2, use_dora=True),
    )
    _randomize_lora(model)
    x = torch.randint(0, 30, (2, 5))
    expected = model(x)
    lora.merge_and_unload(model)
    assert [type(m) for m in model] == [nn.Embedding, nn.Linear, nn.Linear, nn.ReLU, nn.Linear]
    assert not lora.lora_state_dict(model)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_merge_and_unload_convolutions():
    torch.manual_seed(0)
    model = nn.Sequential(lora.Conv2d(3, 4, 3, r=2), nn.Conv2d(4, 2, 1))
    lora.inject(model, ["1"], r=2)
    _randomize_lora(model)
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    lora.merge_and_unload(model)
    assert [type(m) for m in model] == [nn.Conv2d, nn.Conv2d]
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
