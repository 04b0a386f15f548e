"""transformers Conv1D (GPT-2) targets, "all-linear" and rank/alpha patterns, each checked against PEFT."""

import copy

import peft
import pytest
import torch
import transformers

import lora_core as lora

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]


def _gpt2():
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=16,
        n_head=2,
        vocab_size=50,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.3,
    )  # logits through the tied wte need room to move
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _llama():
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _copy_factors_into_peft(ours, reference):
    """Random B for our layers, and the same A/B in PEFT's layers of the same names."""
    torch.manual_seed(2)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, lora.LoRALayer) and module.has_lora():
                module.lora_B.normal_(0, 0.1)
                peft_layer = reference.base_model.model.get_submodule(name)
                peft_layer.lora_A["default"].weight.copy_(module.lora_A)
                peft_layer.lora_B["default"].weight.copy_(module.lora_B)


def test_gpt2_conv1d_inject_keeps_loralib_layout_equals_peft_and_trains():
    ours = _gpt2()
    reference = peft.get_peft_model(
        copy.deepcopy(ours), peft.LoraConfig(r=4, lora_alpha=8, target_modules=GPT2_TARGETS)
    )
    names = lora.inject(ours, GPT2_TARGETS, r=4, lora_alpha=8)
    assert len(names) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    layer = ours.transformer.h[0].attn.c_attn  # Conv1D: weight (in 16, out 48)
    assert layer.weight.shape == (16, 48) and layer.fan_in_fan_out
    assert layer.lora_A.shape == (4, 16) and layer.lora_B.shape == (48, 4)  # loralib's Linear shapes
    assert {k.rsplit(".", 1)[1] for k in lora.lora_state_dict(ours)} == {"lora_A", "lora_B"}
    _copy_factors_into_peft(ours, reference)
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)

    ours.train()
    optimizer = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(20):
        loss = ours(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_gpt2_conv1d_merge_unmerge_bit_exact_and_merge_and_unload_gives_conv1d():
    model = _gpt2()
    lora.inject(model, GPT2_TARGETS, r=4, lora_alpha=8)
    lora.inject(model, ["c_attn"], r=2, adapter_name="second")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    pristine = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        unmerged = model(ids).logits
        lora.merge(model)
        torch.testing.assert_close(model(ids).logits, unmerged, rtol=1e-5, atol=1e-5)
        for dtype in (torch.bfloat16, torch.float32):
            model.to(dtype)  # converting a merged model converts the pristine weights, then merges again
        lora.unmerge(model)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, pristine[name].to(torch.bfloat16).float()), name
    model = _gpt2()
    lora.inject(model, GPT2_TARGETS, r=4, lora_alpha=8)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        expected = model(ids).logits
    lora.merge_and_unload(model)
    conv1d = transformers.pytorch_utils.Conv1D
    assert type(model.transformer.h[0].attn.c_attn) is conv1d
    assert model.transformer.h[0].attn.c_attn.weight.shape == (16, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_all_linear_selects_exactly_peft_set(build):
    ours, theirs = build(), build()
    adapted = lora.inject(ours, "all-linear", r=2)
    reference = peft.get_peft_model(theirs, peft.LoraConfig(r=2, target_modules="all-linear"))
    peft_names = sorted(
        name[len("base_model.model.") :]
        for name, module in reference.named_modules()
        if isinstance(module, peft.tuners.lora.LoraLayer)
    )
    assert sorted(adapted) == peft_names
    assert "lm_head" not in adapted and ours.lora_core_config["targets"] == "all-linear"


def test_rank_and_alpha_patterns_equal_peft_and_are_recorded():
    ours = _llama()
    rank_pattern = {"v_proj": 2, r"layers\.1\.mlp\.down_proj": 6}
    alpha_pattern = {"q_proj": 3, "down_proj": 12}
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
    )
    reference = peft.get_peft_model(copy.deepcopy(ours), config)
    lora.inject(
        ours,
        ["q_proj", "v_proj", "down_proj"],
        r=4,
        lora_alpha=8,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
    )
    for name, module in ours.named_modules():
        if isinstance(module, lora.LoRALayer):
            peft_layer = reference.base_model.model.get_submodule(name)
            assert module.r == peft_layer.r["default"], name
            assert module.scaling == peft_layer.scaling["default"], name
    assert ours.model.layers[1].mlp.down_proj.r == 6 and ours.model.layers[0].mlp.down_proj.r == 4
    _copy_factors_into_peft(ours, reference)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    assert ours.lora_core_config["rank_pattern"] == rank_pattern
    assert ours.lora_core_config["alpha_pattern"] == alpha_pattern
