"""Argument checks: inject validates everything before touching the model; broken adapter files and
loads that would do nothing are refused; DoRA on fused slices is refused (not silently plain LoRA)."""

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import lora_core as lora
from lora_core import LoRAError


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))
    model[0].lora_slices = {"q_proj": 6, "k_proj": 3, "v_proj": 3}
    return model


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [type(m) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def _unchanged(model, snapshot):
    state, types, grads = snapshot
    assert [type(m) for m in model.modules()] == types
    assert [p.requires_grad for p in model.parameters()] == grads
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not hasattr(model, "lora_core_config")


def test_failed_inject_changes_nothing():
    model = _model()
    snapshot = _snapshot(model)
    with pytest.raises(LoRAError, match=r"lora_dropout=1.0 must be a number in \[0, 1\)"):
        lora.inject(model, ["0", "2"], r=2, lora_dropout=1.0)
    _unchanged(model, snapshot)


@pytest.mark.parametrize("alpha", [0, float("nan"), float("inf")])
def test_lora_alpha_zero_or_nan_is_refused(alpha):
    model = _model()
    snapshot = _snapshot(model)
    with pytest.raises(LoRAError, match="lora_alpha=.* must be a finite, non-zero number"):
        lora.inject(model, ["2"], r=2, lora_alpha=alpha)
    with pytest.raises(LoRAError, match=r"alpha_pattern\['2'\]=.* must be a finite, non-zero number"):
        lora.inject(model, ["2"], r=2, alpha_pattern={"2": alpha})
    _unchanged(model, snapshot)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(r="8"), r"r='8': inject needs a LoRA rank r >= 1 \(an int\)"),
        (dict(lora_dropout="0.1"), r"lora_dropout='0.1' must be a number in \[0, 1\)"),
        (dict(use_rslora="yes"), r"use_rslora='yes' must be True or False"),
        (dict(lora_dtype=torch.int8), r"lora_dtype=torch.int8 must be None or a floating-point torch.dtype"),
        (dict(rank_pattern=["2"]), r"rank_pattern=\['2'\] must be a dict of module name or regex -> value"),
        (dict(rank_pattern={"2": 0}), r"rank_pattern\['2'\]=0: inject needs a LoRA rank r >= 1"),
        (dict(targets=5), r"targets=5 must be a regex string, \"all-linear\" or a list of module names"),
        (dict(adapter_name=3), r"adapter_name=3 must be a non-empty string"),
    ],
)
def test_wrong_argument_types_say_what_to_pass(kwargs, message):
    model = _model()
    snapshot = _snapshot(model)
    arguments = dict(targets=["2"], r=2)
    arguments.update(kwargs)
    with pytest.raises(LoRAError, match=message):
        lora.inject(model, **arguments)
    with pytest.raises(LoRAError, match="model must be a torch.nn.Module, not str"):
        lora.inject("model", ["2"])
    _unchanged(model, snapshot)


def test_dora_on_fused_slices_is_refused():
    model = _model()
    snapshot = _snapshot(model)
    with pytest.raises(LoRAError, match=r"0: use_dora=True on slices \['q_proj', 'v_proj'\] of a fused layer"):
        lora.inject(model, ["q_proj", "v_proj"], r=2, use_dora=True)
    _unchanged(model, snapshot)
    lora.inject(model, ["0"], r=2, use_dora=True)  # the whole fused module is one dense Linear: fine
    assert model[0].use_dora


def test_nan_adapter_file_is_refused_and_nothing_loaded(tmp_path):
    model = _model()
    lora.inject(model, ["2"], r=2)
    before = {k: v.clone() for k, v in lora.lora_state_dict(model).items()}
    path = tmp_path / "nan.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in before.items()}, str(path))
    with pytest.raises(LoRAError, match=r"holds NaN or infinite values in 2.lora_A, 2.lora_B"):
        lora.load_adapter(model, path)
    assert all(torch.equal(lora.lora_state_dict(model)[k], v) for k, v in before.items())


def test_load_adapter_into_a_model_without_lora_raises(tmp_path):
    source = _model()
    lora.inject(source, ["2"], r=2)
    path = tmp_path / "a.safetensors"
    lora.save_adapter(source, path)
    with pytest.raises(LoRAError, match="has no LoRA layers, so adapter .* would load nothing"):
        lora.load_adapter(_model(), path, strict=False)
    with pytest.raises(LoRAError, match="strict='no' must be True or False"):
        lora.load_adapter(source, path, strict="no")
    target = _model()  # with adapter_name the adapter is created from the file's config
    lora.load_adapter(target, path, adapter_name="default")
    assert torch.equal(target[2].lora_A, source[2].lora_A)
