"""loralib parity, initialisation, gradients, dtypes and error cases of the LoRA layers."""

import loralib
import pytest
import torch
import torch.nn as nn

import lora_core as lora
from lora_core import LoRAError

ATOL = 1e-6


def _pair(build_ref, build_ours, seed=0):
    """The same layer built by loralib and by lora_core from the same RNG state."""
    torch.manual_seed(seed)
    ref = build_ref()
    torch.manual_seed(seed)
    ours = build_ours()
    return ref, ours


def _randomize_lora(module):
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)


LAYERS = {
    "linear": (lambda m: m.Linear(12, 10, r=4, lora_alpha=8, lora_dropout=0.0), lambda: torch.randn(3, 5, 12)),
    "linear_fan_in_fan_out": (
        lambda m: m.Linear(12, 10, r=2, lora_alpha=3, fan_in_fan_out=True),
        lambda: torch.randn(4, 12),
    ),
    "embedding": (lambda m: m.Embedding(30, 8, r=4, lora_alpha=4, padding_idx=0), lambda: torch.randint(0, 30, (3, 7))),
    "merged": (
        lambda m: m.MergedLinear(12, 18, r=2, lora_alpha=4, enable_lora=[True, False, True]),
        lambda: torch.randn(2, 6, 12),
    ),
    "merged_fan_in_fan_out": (
        lambda m: m.MergedLinear(12, 18, r=2, lora_alpha=4, enable_lora=[True, True, True], fan_in_fan_out=True),
        lambda: torch.randn(2, 6, 12),
    ),
    "conv2d": (lambda m: m.Conv2d(3, 6, 3, r=2, lora_alpha=4, padding=1), lambda: torch.randn(2, 3, 8, 8)),
    "conv2d_groups": (lambda m: m.Conv2d(4, 6, 3, r=2, lora_alpha=2, groups=2), lambda: torch.randn(2, 4, 7, 7)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_same_init_keys_and_outputs_as_loralib(kind):
    build, make_input = LAYERS[kind]
    ref, ours = _pair(lambda: build(loralib), lambda: build(lora))
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert list(ref_state) == list(our_state)
    for key in ref_state:  # same RNG consumption -> a seeded loralib program gives the same model
        assert torch.equal(ref_state[key], our_state[key]), key
    _randomize_lora(ref)
    ours.load_state_dict(loralib.lora_state_dict(ref), strict=False)
    x = make_input()
    for mode in ("train", "eval", "train"):
        getattr(ref, mode)()
        getattr(ours, mode)()
        assert ref.merged == ours.merged
        torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=1e-5)


def test_lora_state_dict_matches_loralib_for_a_model():
    def build(m):
        return nn.Sequential(
            m.Embedding(20, 8, r=2),
            m.Linear(8, 8, r=2, bias=True),
            nn.LayerNorm(8),
            m.MergedLinear(8, 12, r=2, enable_lora=[True, False, True]),
        )

    ref, ours = _pair(lambda: build(loralib), lambda: build(lora))
    for bias in ("none", "all", "lora_only"):
        assert list(loralib.lora_state_dict(ref, bias=bias)) == list(lora.lora_state_dict(ours, bias=bias))
    _randomize_lora(ref)
    missing, unexpected = ours.load_state_dict(loralib.lora_state_dict(ref), strict=False)
    assert unexpected == [] and all("lora_" not in k for k in missing)
    x = torch.randint(0, 20, (2, 5))
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_output_equals_base_at_initialization(kind):
    build, make_input = LAYERS[kind]
    torch.manual_seed(1)
    layer = build(lora)
    x = make_input()
    with lora.disable_adapters(layer):
        base = layer(x)
    if kind == "embedding":  # loralib's embedding init zeroes A instead of B
        assert torch.count_nonzero(layer.lora_A) == 0
    torch.testing.assert_close(layer(x), base, atol=0, rtol=0)


def test_gradients_reach_only_lora_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(lora.Linear(6, 6, r=2), nn.ReLU(), lora.Linear(6, 4, r=2, bias=True))
    lora.mark_only_lora_as_trainable(model)
    _randomize_lora(model)
    model(torch.randn(5, 6)).pow(2).sum().backward()
    for name, param in model.named_parameters():
        if "lora_" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None and not param.requires_grad, name


def test_bf16_base_with_fp32_lora_returns_base_dtype_and_fp32_grads():
    torch.manual_seed(0)
    layer = lora.Linear(16, 8, r=4, dtype=torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.float32
    _randomize_lora(layer)
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32 and layer.lora_B.grad.abs().sum() > 0
    expected = (
        x.float() @ layer.weight.float().T
        + layer.bias.float()
        + x.float() @ layer.lora_A.T @ layer.lora_B.T * layer.scaling
    )
    # bf16 compute: error relative to the output's scale stays within a few bf16 ulps
    assert (out.float() - expected).abs().max() <= 0.02 * expected.abs().max()


def test_rslora_scaling():
    layer = lora.Linear(8, 8, r=16, lora_alpha=8, use_rslora=True)
    assert layer.scaling == pytest.approx(8 / 4)
    assert lora.Linear(8, 8, r=16, lora_alpha=8).scaling == pytest.approx(0.5)


def test_dora_starts_at_base_and_matches_its_definition():
    torch.manual_seed(0)
    layer = lora.Linear(10, 6, r=2, lora_alpha=4, use_dora=True, bias=True)
    x = torch.randn(3, 10)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6, rtol=1e-5)
    _randomize_lora(layer)
    combined = layer.weight + layer.lora_B @ layer.lora_A * layer.scaling
    expected_weight = combined * (layer.lora_magnitude_vector / combined.norm(dim=1))[:, None]
    torch.testing.assert_close(layer(x), x @ expected_weight.T + layer.bias, atol=1e-5, rtol=1e-5)
    layer(x).sum().backward()
    assert layer.lora_magnitude_vector.grad is not None


@pytest.mark.parametrize("conv_cls,shape", [(lora.Conv1d, (2, 3, 9)), (lora.Conv3d, (1, 3, 5, 5, 5))])
def test_conv1d_and_conv3d_work_where_loralib_breaks(conv_cls, shape):
    torch.manual_seed(0)
    layer = conv_cls(3, 4, 3, r=2, lora_alpha=2)
    _randomize_lora(layer)
    x = torch.randn(*shape)
    out = layer(x)
    assert layer.delta_weight().shape == layer.conv.weight.shape
    reference = layer.conv._conv_forward(x, layer.conv.weight + layer.delta_weight(), layer.conv.bias)
    torch.testing.assert_close(out, reference)


def test_r_zero_is_a_plain_layer_and_negative_r_is_refused():
    plain = lora.Linear(4, 4, r=0)
    assert not hasattr(plain, "lora_A") and plain.weight.requires_grad
    with pytest.raises(LoRAError, match="r=-1"):
        lora.Linear(4, 4, r=-1)
    with pytest.raises(LoRAError, match="lora_dropout"):
        lora.Linear(4, 4, r=2, lora_dropout=1.5)


def test_merged_linear_errors_and_no_mutable_default():
    with pytest.raises(LoRAError, match="does not divide out_features=10"):
        lora.MergedLinear(4, 10, r=2, enable_lora=[True, False, True])
    with pytest.raises(LoRAError, match="sum to 9"):
        lora.MergedLinear(4, 10, r=2, enable_lora=[True, True], slice_sizes=(4, 5))
    first = lora.MergedLinear(4, 8, r=2)
    first.enable_lora.append(True)
    assert lora.MergedLinear(4, 8, r=2).enable_lora == [False]
    # loralib crashes here (r > 0 with nothing enabled); ours is a plain linear
    x = torch.randn(2, 4)
    torch.testing.assert_close(first(x), nn.functional.linear(x, first.weight, first.bias))


def test_unknown_bias_mode_is_refused_clearly():
    model = nn.Sequential(lora.Linear(4, 4, r=2))
    for call in (lora.mark_only_lora_as_trainable, lora.lora_state_dict):
        with pytest.raises(LoRAError, match="bias='some'"):
            call(model, bias="some")
        with pytest.raises(NotImplementedError):  # what loralib raised
            call(model, bias="some")


def test_dropout_is_a_module_and_model_pickles(tmp_path):
    layer = lora.Linear(4, 4, r=2, lora_dropout=0.1)
    assert isinstance(layer.lora_dropout, nn.Dropout)
    torch.save(layer, tmp_path / "layer.pt")
    again = torch.load(tmp_path / "layer.pt", weights_only=False)
    assert isinstance(again, lora.Linear)
