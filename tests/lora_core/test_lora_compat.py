"""End-to-end compatibility: a loralib tutorial program runs unchanged on lora_core, and
injected LoRA computes what PEFT computes for the same factors."""

import io

import loralib
import peft
import torch
import torch.nn as nn
import transformers

import lora_core


def loralib_tutorial(lora):
    """A program written for loralib (`import loralib as lora`), run with either library."""
    torch.manual_seed(0)
    model = nn.Sequential(
        lora.Embedding(50, 16, r=4),
        lora.Linear(16, 32, r=4, lora_alpha=8, lora_dropout=0.1),
        nn.GELU(),
        lora.MergedLinear(32, 48, r=2, enable_lora=[True, False, True]),
        nn.Flatten(0, 1),
        lora.Linear(48, 50, r=4),
    )
    lora.mark_only_lora_as_trainable(model, bias="lora_only")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.randint(0, 50, (4, 6))
    for _ in range(3):
        model.train()
        loss = nn.functional.cross_entropy(model(ids), ids.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()  # loralib merges here and unmerges on the next train()
        with torch.no_grad():
            model(ids)
    buffer = io.BytesIO()
    torch.save(lora.lora_state_dict(model, bias="lora_only"), buffer)
    pretrained = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    torch.manual_seed(1)
    fresh = nn.Sequential(
        lora.Embedding(50, 16, r=4),
        lora.Linear(16, 32, r=4, lora_alpha=8, lora_dropout=0.1),
        nn.GELU(),
        lora.MergedLinear(32, 48, r=2, enable_lora=[True, False, True]),
        nn.Flatten(0, 1),
        lora.Linear(48, 50, r=4),
    )
    fresh.train()  # unmerged load of the pretrained (here: the model's own) weights
    fresh.load_state_dict(model.train().state_dict(), strict=False)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=False)
    fresh.eval()
    with torch.no_grad():
        return fresh(ids), lora.lora_state_dict(fresh, bias="lora_only"), pretrained


def test_loralib_tutorial_runs_unchanged_with_same_results():
    ref_out, ref_lora, ref_base = loralib_tutorial(loralib)
    our_out, our_lora, our_base = loralib_tutorial(lora_core)
    assert list(our_lora) == list(ref_lora)
    for key in ref_lora:
        torch.testing.assert_close(our_lora[key], ref_lora[key], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(our_out, ref_out, atol=1e-4, rtol=1e-4)


def test_injected_lora_matches_peft_on_a_tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    ours = transformers.LlamaForCausalLM(config).eval()
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.load_state_dict(ours.state_dict())
    targets = ["q_proj", "v_proj", "gate_proj"]
    lora_core.inject(ours, targets, r=4, lora_alpha=8, use_rslora=True)
    reference = peft.get_peft_model(
        reference, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_rslora=True)
    )
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, lora_core.Linear):
                module.lora_B.normal_(0, 0.1)
                peft_layer = reference.base_model.model.get_submodule(name)
                peft_layer.lora_A["default"].weight.copy_(module.lora_A)
                peft_layer.lora_B["default"].weight.copy_(module.lora_B)
    ids = torch.randint(0, 64, (2, 9))
    torch.testing.assert_close(ours(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)
