"""Named adapters: several adapters on one model, active sets, per-row adapters, merging one adapter."""

import pytest
import torch
import torch.nn as nn

import lora_core as lora
from lora_core import LoRAError


class Tiny(nn.Module):
    """Embedding -> fused projection with slices -> Conv1d over time -> Linear: every LoRA layer kind."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.qkv = nn.Linear(8, 12)
        self.qkv.lora_slices = {"q": 6, "k": 3, "v": 3}
        self.conv = nn.Conv1d(12, 12, 3, padding=1)
        self.out = nn.Linear(12, 5)

    def forward(self, ids):
        hidden = self.qkv(self.embed(ids))  # (B, T, 12)
        hidden = self.conv(hidden.transpose(1, 2)).transpose(1, 2)  # conv over T
        return self.out(torch.relu(hidden))


def _base(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def _randomize(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.5)


def _two_adapters():
    model = _base()
    lora.inject(model, ["embed", "q", "v", "out"], r=2, lora_alpha=4)
    lora.inject(model, ["qkv", "conv", "out"], r=3, lora_alpha=3, adapter_name="roleplay", use_rslora=True)
    _randomize(model)
    return model


IDS = torch.randint(0, 30, (4, 6), generator=torch.Generator().manual_seed(1))


def test_default_keeps_loralib_keys_and_named_adapter_has_its_own():
    model = _two_adapters()
    keys = set(lora.lora_state_dict(model))
    assert {"embed.lora_A", "qkv.lora_A", "qkv.lora_B", "out.lora_A"} <= keys
    assert {
        "qkv.lora_adapters.roleplay.lora_A",
        "conv.lora_adapters.roleplay.lora_B",
        "out.lora_adapters.roleplay.lora_A",
    } <= keys
    assert lora.adapter_names(model) == ["default", "roleplay"]
    assert model.lora_core_adapters["roleplay"]["adapted"] == ["qkv", "conv", "out"]
    assert model.lora_core_config["adapted"] == ["embed", "q", "v", "out"]


def test_each_adapter_active_equals_a_model_with_that_adapter_alone(tmp_path):
    model = _two_adapters()
    for name in ("default", "roleplay"):
        path = tmp_path / f"{name}.safetensors"
        lora.save_adapter(model, path, adapter_name=name)
        alone = _base()  # the same base weights, only this adapter (created from the file's config)
        lora.load_adapter(alone, path, adapter_name="default")
        assert lora.adapter_names(alone) == ["default"]
        lora.set_active_adapters(model, [name])
        torch.testing.assert_close(model(IDS), alone(IDS), rtol=1e-5, atol=1e-5)  # conv: W x + dW x vs (W + dW) x
    with lora.disable_adapters(model):
        base = model(IDS)
    lora.set_active_adapters(model, [])
    torch.testing.assert_close(model(IDS), base, rtol=0, atol=0)  # no adapter active: the base, exactly
    lora.set_active_adapters(model, None)  # both: the sum of both updates
    assert not torch.allclose(model(IDS), base, atol=1e-3)


def test_adapter_rows_equal_each_row_run_alone_and_train_both_adapters():
    model = _two_adapters()
    rows = ["roleplay", None, "default", "roleplay"]
    with lora.adapter_rows(model, rows):
        mixed = model(IDS)
    for index, name in enumerate(rows):
        lora.set_active_adapters(model, [] if name is None else [name])
        alone = model(IDS[index : index + 1])
        torch.testing.assert_close(mixed[index : index + 1], alone, rtol=1e-5, atol=1e-5)
    lora.set_active_adapters(model, None)
    with lora.adapter_rows(model, rows):
        model(IDS).pow(2).mean().backward()
    assert model.out.lora_adapters["roleplay"].lora_A.grad.abs().sum() > 0
    assert model.out.lora_A.grad.abs().sum() > 0
    with pytest.raises(LoRAError, match="3 rows, but a LoRA layer got input of shape \\(4, 6\\)"):
        with lora.adapter_rows(model, rows[:3]):
            model(IDS)
    assert "forward" not in model.out.__dict__  # the block cleaned up after the error
    with pytest.raises(LoRAError, match="adapter 'nope', which is not on this model"):
        with lora.adapter_rows(model, ["nope"] * 4):
            pass


def test_merging_one_adapter_is_exact_and_unmerge_is_bit_exact():
    model = _two_adapters()
    pristine = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    expected = model(IDS)  # both adapters active, unmerged
    assert lora.merge(model, ["roleplay"]) == 3
    assert model.out.merged_adapters == ["roleplay"] and model.embed.merged_adapters == []
    torch.testing.assert_close(model(IDS), expected, rtol=1e-5, atol=1e-5)  # roleplay folded in, default not
    with lora.adapter_rows(model, ["default"] * 4):  # rows need unmerged layers; merged again after
        torch.testing.assert_close(model(IDS), (lora.set_active_adapters(model, ["default"]), model(IDS))[1])
    lora.set_active_adapters(model, None)
    lora.merge(model, ["roleplay"])
    lora.unmerge(model)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, pristine[name]), name
    # Making a merged adapter inactive unmerges it: outputs are then the default adapter's alone.
    lora.merge(model)
    lora.set_active_adapters(model, ["default"])
    assert model.out.merged_adapters == ["default"]
    lora.unmerge(model)
    default_only = model(IDS)
    lora.merge(model)
    torch.testing.assert_close(model(IDS), default_only, rtol=1e-5, atol=1e-5)


def test_delete_adapter_and_unknown_names():
    model = _two_adapters()
    lora.set_active_adapters(model, ["default"])
    default_only = model(IDS)
    assert lora.delete_adapter(model, "roleplay") == 3
    assert not any("lora_adapters" in k for k in model.state_dict())
    assert "roleplay" not in model.lora_core_adapters
    torch.testing.assert_close(model(IDS), default_only, rtol=0, atol=0)
    with pytest.raises(LoRAError, match="adapter 'roleplay' is not on this model; its adapters: \\['default'\\]"):
        lora.set_active_adapters(model, ["roleplay"])
    with pytest.raises(LoRAError, match="adapter_name='a.b' must be a non-empty string"):
        lora.inject(model, ["out"], adapter_name="a.b")
    assert lora.delete_adapter(model, "default") == 3
    assert lora.lora_state_dict(model) == {}
    with lora.disable_adapters(model):
        base = model(IDS)
    torch.testing.assert_close(model(IDS), base, rtol=0, atol=0)


def test_injecting_a_new_adapter_joins_a_restricted_active_set():
    model = _base()
    lora.inject(model, ["out"], r=2)
    lora.set_active_adapters(model, [])
    lora.inject(model, ["out"], r=2, adapter_name="extra")
    assert lora.active_adapters(model) == ["extra"]
    assert model.out.active_adapters == ("extra",)


def test_dora_beside_named_adapters_is_refused_before_any_change():
    model = _base()
    lora.inject(model, ["out"], r=2, use_dora=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoRAError, match="out carries a DoRA default adapter"):
        lora.inject(model, ["qkv", "out"], r=2, adapter_name="b")
    assert type(model.qkv) is nn.Linear and model.state_dict().keys() == state.keys()
    with pytest.raises(LoRAError, match="use_dora=True is supported for the default adapter only"):
        lora.inject(model, ["qkv"], r=2, adapter_name="b", use_dora=True)


def test_named_adapters_on_a_4bit_base_and_fused_slices():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    model = nn.Sequential(
        bnb.nn.Linear4bit(16, 24, quant_type="nf4"), nn.GELU(), bnb.nn.Linear4bit(24, 8, quant_type="nf4")
    ).to("cpu")  # moving quantizes
    model[0].lora_slices = {"q_proj": 16, "k_proj": 4, "v_proj": 4}
    lora.inject(model, ["q_proj", "2"], r=2)  # default: the q slice and the output layer
    lora.inject(model, ["k_proj", "v_proj"], r=3, adapter_name="b")  # other slices, as a named adapter
    lora.inject(model, ["2"], r=2, adapter_name="c")
    _randomize(model)
    x = torch.randn(3, 16)
    rows = ["c", "b", None]
    with lora.adapter_rows(model, rows):
        mixed = model(x)
    for index, name in enumerate(rows):
        lora.set_active_adapters(model, [] if name is None else [name])
        torch.testing.assert_close(mixed[index : index + 1], model(x[index : index + 1]), rtol=1e-5, atol=1e-5)
    packed = model[0].weight
    lora.set_active_adapters(model, ["b"])
    with pytest.warns(UserWarning, match="re-quantizes"):
        lora.merge(model, ["b"])
    lora.unmerge(model)
    assert model[0].weight is packed  # the original packed 4-bit weight is back
