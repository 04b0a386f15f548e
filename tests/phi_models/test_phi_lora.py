"""lora_core.inject on phi_models models through the fused-slice protocol (docs/design.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import phi_models

lora_core = pytest.importorskip("lora_core")


def _train_step(model, vocab):
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss


def test_inject_tutorial_targets_on_phi():
    model = phi_models.from_pretrained("tiny").train()
    adapted = lora_core.inject(
        model, ["q_proj", "v_proj", "dense", "fc1", "fc2"], r=16, lora_alpha=16, lora_dropout=0.05
    )
    layer0 = {name for name in adapted if name.startswith("model.layers.0.")}
    assert layer0 == {
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.dense",
        "model.layers.0.mlp.fc1", "model.layers.0.mlp.fc2",
    }  # fmt: skip
    assert len(adapted) == 5 * model.config.num_hidden_layers
    qkv = model.model.layers[0].self_attn.qkv_proj
    assert isinstance(qkv, lora_core.MergedLinear)
    assert list(qkv.enable_lora) == [True, False, True]
    _train_step(model, 2048)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # B starts at zero, so only the B matrices get a gradient on the first step.
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_legacy_names_and_gradient_checkpointing():
    model = phi_models.from_pretrained("tiny").train()
    adapted = lora_core.inject(model, ["Wqkv", "out_proj"], r=4, lora_alpha=8)
    assert "model.layers.0.self_attn.qkv_proj" in adapted and "model.layers.0.self_attn.dense" in adapted
    model.set_gradient_checkpointing(True)
    loss = _train_step(model, 2048)
    assert torch.isfinite(loss)


def test_inject_on_phi3_slices_and_4bit(tmp_path):
    config = phi_models.PhiConfig(
        model_type="phi3", vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = phi_models.PhiForCausalLM(config)
    model.init_weights(0)
    from phi_models.quantize import quantize_model

    quantize_model(model, "nf4")
    adapted = lora_core.inject(model, ["k_proj", "gate_proj", "o_proj"], r=4, lora_alpha=4)
    assert "model.layers.1.self_attn.k_proj" in adapted and "model.layers.1.mlp.gate_proj" in adapted
    model.train()
    _train_step(model, 64)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("model_type", ["phi", "phi3"])
def test_default_targets_adapt_every_attention_and_mlp_projection(model_type):
    config = phi_models.PhiConfig(
        model_type=model_type, vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4,
    )  # fmt: skip
    targets = phi_models.default_lora_targets(config)
    assert targets == phi_models.default_lora_targets(model_type)
    adapted = lora_core.inject(phi_models.PhiForCausalLM(config), targets, r=2, lora_alpha=2)
    layer0 = sorted(name.rsplit(".", 1)[-1] for name in adapted if name.startswith("model.layers.0."))
    assert layer0 == sorted(targets)  # each default names a layer (or a fused slice) of every block
    assert len(adapted) == len(targets) * config.num_hidden_layers


def test_no_default_targets_for_an_unknown_architecture():
    with pytest.raises(phi_models.PhiModelError, match="no default LoRA targets for model type 'llama'"):
        phi_models.default_lora_targets("llama")
