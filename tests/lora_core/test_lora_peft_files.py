"""PEFT adapter directories for any model: real GPT-2 PEFT files and PEFT-written adapters loaded
with lora_core.load_peft equal PeftModel.from_pretrained, and save_peft writes them back so PEFT
loads them identically."""

import copy
import json
import shutil
from pathlib import Path

import peft
import pytest
import torch
import torch.nn as nn
import transformers
from safetensors.torch import load_file, save_file

import lora_core as lora
from lora_core import LoRAError

REPO = Path(__file__).resolve().parents[2]
REALCASES = REPO.parent / "shared" / "realcases" / "05c_gpt2_lora_weights_format_fixtures"


def _peft_dir(tmp_path, stem):
    folder = tmp_path / stem
    folder.mkdir()
    shutil.copy(REALCASES / f"{stem}.adapter_config.json", folder / "adapter_config.json")
    shutil.copy(REALCASES / f"{stem}.adapter_model.safetensors", folder / "adapter_model.safetensors")
    return folder


def _peft_logits(base, folder, ids):
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
    with torch.no_grad():
        return model(ids).logits


# The real adapters fix n_embd=768 and the layer count; a narrow MLP and a small vocabulary keep the
# random base cheap without touching any adapted shape (attn.c_attn, attn.c_proj).
REAL = [
    ("distilgpt2_causal_lm", 6, transformers.GPT2LMHeadModel, {}),
    ("gpt2_seq_cls", 12, transformers.GPT2ForSequenceClassification, {"num_labels": 6, "pad_token_id": 0}),
]


@pytest.mark.skipif(not REALCASES.is_dir(), reason="../shared/realcases (real PEFT GPT-2 adapters) is absent")
@pytest.mark.parametrize("stem, layers, model_class, extra", REAL, ids=[r[0] for r in REAL])
def test_real_gpt2_peft_adapters_load_like_peft_and_save_back(tmp_path, stem, layers, model_class, extra):
    config = transformers.GPT2Config(
        n_layer=layers,
        n_embd=768,
        n_head=12,
        n_inner=32,
        vocab_size=256,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        **extra,
    )
    torch.manual_seed(0)
    base = model_class(config).eval()
    folder = _peft_dir(tmp_path, stem)
    ids = torch.randint(1, 256, (2, 10))
    reference = _peft_logits(base, folder, ids)
    ours = copy.deepcopy(base)
    adapted = lora.load_peft(ours, folder)
    assert len(adapted) == len(json.load(open(folder / "adapter_config.json"))["target_modules"]) * layers
    assert all(type(ours.get_submodule(n)).__name__ == "LoRAConv1D" for n in adapted)
    with torch.no_grad():
        logits = ours(ids).logits
        base_logits = base(ids).logits
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert (logits - base_logits).abs().max() > 1e-2  # the adapter does change the outputs

    written = tmp_path / "written"
    lora.save_peft(ours, written, base_model_name_or_path="gpt2")
    original, again = load_file(folder / "adapter_model.safetensors"), load_file(written / "adapter_model.safetensors")
    assert sorted(original) == sorted(again)
    for key in original:
        assert torch.equal(original[key], again[key]), key
    saved_config = json.load(open(written / "adapter_config.json"))
    assert saved_config["task_type"] == json.load(open(folder / "adapter_config.json"))["task_type"]
    assert saved_config["fan_in_fan_out"] is True and saved_config["base_model_name_or_path"] == "gpt2"
    torch.testing.assert_close(_peft_logits(base, written, ids), reference, rtol=0, atol=0)


def _tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _peft_written(tmp_path, base, lora_config):
    """A PEFT adapter with random factors, written by PEFT's own save_pretrained."""
    model = peft.get_peft_model(copy.deepcopy(base), lora_config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.2)
    folder = tmp_path / "peft_written"
    model.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("use_dora", [False, True], ids=["rslora", "dora"])
def test_peft_written_adapter_with_patterns_loads_and_saves_identically(tmp_path, use_dora):
    base = _tiny_llama()
    targets = ["q_proj", "v_proj", "down_proj"] + ([] if use_dora else ["embed_tokens"])
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=targets,
        use_rslora=not use_dora,
        use_dora=use_dora,
        rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
        alpha_pattern={"down_proj": 3},
    )
    folder = _peft_written(tmp_path, base, config)
    ids = torch.randint(0, 64, (2, 7))
    reference = _peft_logits(base, folder, ids)
    ours = copy.deepcopy(base)
    lora.load_peft(ours, folder)
    assert ours.model.layers[1].self_attn.q_proj.r == 6 and ours.model.layers[0].self_attn.v_proj.r == 2
    assert ours.model.layers[0].mlp.down_proj.lora_alpha == 3
    recorded = ours.lora_core_config
    assert recorded["rank_pattern"] == {"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6}
    assert recorded["alpha_pattern"] == {"down_proj": 3}
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference, rtol=1e-5, atol=1e-5)
    written = tmp_path / "written"
    lora.save_peft(ours, written)
    original, again = load_file(folder / "adapter_model.safetensors"), load_file(written / "adapter_model.safetensors")
    lora_keys = sorted(k for k in original if "lora_" in k)  # PEFT also saves the embedding base; we need not
    assert sorted(k for k in again if "lora_" in k) == lora_keys
    for key in lora_keys:
        assert torch.equal(original[key], again[key]), key
    torch.testing.assert_close(_peft_logits(base, written, ids), reference, rtol=1e-6, atol=1e-6)


class FusedAttention(nn.Module):
    """q/k/v in one fused Linear with lora_slices, the layout phi_models uses."""

    def __init__(self):
        super().__init__()
        self.qkv_proj = nn.Linear(8, 16)
        self.qkv_proj.lora_slices = {"q_proj": 8, "k_proj": 4, "v_proj": 4}

    def forward(self, x):
        return self.qkv_proj(x)


class SplitAttention(nn.Module):
    def __init__(self, fused):
        super().__init__()
        weights = fused.qkv_proj.weight.split([8, 4, 4])
        biases = fused.qkv_proj.bias.split([8, 4, 4])
        for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
            layer = nn.Linear(8, weight.shape[0])
            layer.weight.data.copy_(weight)
            layer.bias.data.copy_(bias)
            setattr(self, name, layer)

    def forward(self, x):
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)


def test_separate_peft_projections_load_into_fused_slices_and_back(tmp_path):
    torch.manual_seed(0)
    fused = FusedAttention()
    split = SplitAttention(fused)
    folder = _peft_written(tmp_path, split, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    x = torch.randn(3, 8)
    reference = peft.PeftModel.from_pretrained(copy.deepcopy(split), str(folder))(x)
    assert lora.load_peft(fused, folder) == ["q_proj", "v_proj"]
    assert isinstance(fused.qkv_proj, lora.MergedLinear) and fused.qkv_proj.enable_lora == [True, False, True]
    torch.testing.assert_close(fused(x), reference, rtol=1e-6, atol=1e-6)
    lora.save_peft(fused, tmp_path / "back")
    original, again = (
        load_file(folder / "adapter_model.safetensors"),
        load_file(tmp_path / "back" / "adapter_model.safetensors"),
    )
    assert sorted(original) == sorted(again) and all(torch.equal(original[k], again[k]) for k in original)


def test_load_peft_as_a_named_adapter_beside_another(tmp_path):
    base = _tiny_llama()
    folder = _peft_written(tmp_path, base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"]))
    ids = torch.randint(0, 64, (2, 5))
    reference = _peft_logits(base, folder, ids)
    ours = copy.deepcopy(base)
    lora.inject(ours, ["q_proj", "v_proj"], r=3)
    lora.load_peft(ours, folder, adapter_name="peft")
    lora.set_active_adapters(ours, ["peft"])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference, rtol=1e-5, atol=1e-5)
    lora.save_peft(ours, tmp_path / "back", adapter_name="peft")
    torch.testing.assert_close(_peft_logits(base, tmp_path / "back", ids), reference, rtol=1e-6, atol=1e-6)


def test_bad_peft_directories_are_refused_before_any_change(tmp_path):
    base = _tiny_llama()
    folder = _peft_written(tmp_path, base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    model = copy.deepcopy(base)
    with pytest.raises(LoRAError, match="does not exist"):
        lora.load_peft(model, tmp_path / "nowhere")
    config = json.load(open(folder / "adapter_config.json"))
    (folder / "adapter_config.json").write_text(json.dumps(dict(config, lora_bias=True)))
    with pytest.raises(LoRAError, match=r"lora_bias=True \(LoRA bias terms"):
        lora.load_peft(model, folder)
    (folder / "adapter_config.json").write_text(json.dumps(dict(config, r=3)))
    with pytest.raises(LoRAError, match=r"q_proj.lora_A: file \(2, 32\) vs expected \(3, 32\)"):
        lora.load_peft(model, folder)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, folder / "adapter_model.safetensors")
    with pytest.raises(LoRAError, match="holds NaN or infinite values"):
        lora.load_peft(model, folder)
    renamed = {k.replace("model.layers", "model.blocks"): v for k, v in tensors.items()}
    save_file(renamed, folder / "adapter_model.safetensors")
    with pytest.raises(LoRAError, match="no module 'model.blocks.0.self_attn.q_proj'"):
        lora.load_peft(model, folder)
    assert lora.lora_layers(model) == []  # nothing was injected by any refused call
