"""PEFT adapters both ways and merged exports, against transformers + peft on Phi-shaped random checkpoints."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

import lora_core
import phi_models
from phi_models import PhiModelError

peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

TOL = 1e-4
INPUT = torch.tensor([[5, 17, 99, 3, 64, 8, 120, 41], [1, 2, 3, 4, 5, 6, 7, 9]])

# (shape, our targets, rsLoRA, DoRA): fused slices partly enabled (q and v only), whole modules, rsLoRA, DoRA.
EXPORT_CASES = [
    ("phi-1_5", ["q_proj", "v_proj", "dense", "fc1"], False, False),
    ("phi-2", ["q_proj", "v_proj", "fc2"], True, False),
    ("phi-2", ["Wqkv", "dense", "fc1"], False, True),
    ("phi-3-mini-4k", ["q_proj", "v_proj", "up_proj", "o_proj"], False, False),
    ("phi-3-mini-4k", ["q_proj", "v_proj", "gate_proj"], True, False),
    ("phi-3-mini-4k", ["qkv_proj", "o_proj", "down_proj"], False, True),
    ("phi-4-mini", ["q_proj", "v_proj", "gate_proj", "down_proj"], True, False),
    ("phi-4-mini", ["qkv_proj", "gate_up_proj"], True, True),
]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _ours(directory):
    # transformers 5 admits W keys under a sliding window of W (our default is the flash-attn W+1)
    return phi_models.from_pretrained(directory, sliding_window_mode="w")


def _randomize_lora(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "magnitude" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))


def _ours_with_lora(directory, targets, rslora, dora):
    model = _ours(directory)
    lora_core.inject(model, targets=targets, r=4, lora_alpha=8, use_rslora=rslora, use_dora=dora)
    _randomize_lora(model)
    return model.eval()


@torch.no_grad()
def _logits(model):
    out = model(INPUT)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("shape,targets,rslora,dora", EXPORT_CASES)
def test_exported_adapter_loads_in_peft_with_our_logits(saved_hf, tmp_path, shape, targets, rslora, dora):
    hf, directory = saved_hf(shape)
    ours = _ours_with_lora(directory, targets, rslora, dora)
    out = phi_models.export_peft_adapter(ours, tmp_path / "peft", base_model_name_or_path=str(directory))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_rslora"] is rslora and config["use_dora"] is dora
    peft_model = _quiet(peft.PeftModel.from_pretrained, hf, out).eval()
    expected = _logits(ours)
    assert (_logits(peft_model) - expected).abs().max() < TOL
    with lora_core.disable_adapters(ours):  # the adapter really changes the output
        assert (_logits(ours) - expected).abs().max() > 1e-2
    # ours -> PEFT -> ours is bit-exact: same LoRA tensors, same layers
    again = _ours(directory)
    phi_models.load_peft_adapter(again, out)
    before, after = lora_core.lora_state_dict(ours), lora_core.lora_state_dict(again)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_logits(again.eval()), expected)


def test_phi3_slices_export_as_stacked_fused_adapter(saved_hf, tmp_path):
    _, directory = saved_hf("phi-3-mini-4k")
    ours = _ours_with_lora(directory, ["q_proj", "v_proj", "o_proj", "down_proj"], True, False)
    out = phi_models.export_peft_adapter(ours, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "o_proj", "qkv_proj"] and config["r"] == 4
    assert config["rank_pattern"] == {"qkv_proj": 8} and math.isclose(
        config["alpha_pattern"]["qkv_proj"], 8 * math.sqrt(2)
    )
    from safetensors.torch import load_file

    tensors = load_file(out / "adapter_model.safetensors")
    b = tensors["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"]
    assert b.shape == (64 + 64 + 64, 8)
    assert torch.count_nonzero(b[64:128]) == 0  # k rows: no adapter
    assert torch.count_nonzero(b[:64, 4:]) == 0 and torch.count_nonzero(b[128:, :4]) == 0  # block diagonal


@pytest.mark.parametrize("shape,targets,rslora,dora", EXPORT_CASES[:1] + EXPORT_CASES[3:4] + EXPORT_CASES[6:7])
def test_merged_export_loads_in_transformers_with_our_logits(saved_hf, tmp_path, shape, targets, rslora, dora):
    from transformers import AutoModelForCausalLM

    _, directory = saved_hf(shape)
    ours = _ours_with_lora(directory, targets, rslora, dora)
    out = phi_models.export_merged(ours, tmp_path / "merged", base_model=str(directory))
    assert (out / "model.safetensors.index.json").is_file() and (out / "generation_config.json").is_file()
    merged = _quiet(AutoModelForCausalLM.from_pretrained, out, dtype=torch.float32).eval()
    assert (_logits(merged) - _logits(ours)).abs().max() < TOL
    assert lora_core.lora_layers(ours) and not any(layer.merged for layer in lora_core.lora_layers(ours))


# ---- adapters made by peft on the transformers model ------------------------------------------------------

IMPORT_CASES = [
    ("phi-2", dict(target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])),  # the roleplay tutorial
    ("phi-1_5", dict(target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3})),
    ("phi-2", dict(target_modules=["q_proj", "k_proj", "v_proj", "fc1"], use_dora=True, use_rslora=True)),
    (
        "phi-3-mini-4k",
        dict(
            target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            rank_pattern={"o_proj": 2},
            alpha_pattern={"down_proj": 5},
            use_rslora=True,
        ),
    ),
    ("phi-4-mini", dict(target_modules=["qkv_proj", "gate_up_proj"], use_dora=True)),
]


def _peft_adapter(hf, options, out):
    cfg = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **options)
    model = _quiet(peft.get_peft_model, copy.deepcopy(hf), cfg).eval()
    if options.get("use_dora"):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "magnitude" in name:
                    p.mul_(1.1)
    model.save_pretrained(out)
    return model


@pytest.mark.parametrize("shape,options", IMPORT_CASES)
def test_peft_made_adapter_loads_into_ours(saved_hf, tmp_path, shape, options):
    hf, directory = saved_hf(shape)
    reference = _peft_adapter(hf, options, tmp_path / "adapter")
    ours = _ours(directory)
    phi_models.load_peft_adapter(ours, tmp_path / "adapter")
    expected = _logits(reference)
    assert (_logits(ours.eval()) - expected).abs().max() < TOL
    assert (_logits(hf) - expected).abs().max() > 1e-2  # the adapter matters


def _msft_checkpoint(hf, directory):
    """The same weights in the Nov-2023 phi-msft layout (transformer.h.N.mixer.Wqkv ...)."""
    from safetensors.torch import save_file

    sd, config = hf.state_dict(), hf.config
    out = {
        "transformer.embd.wte.weight": sd["model.embed_tokens.weight"],
        "lm_head.ln.weight": sd["model.final_layernorm.weight"],
        "lm_head.ln.bias": sd["model.final_layernorm.bias"],
        "lm_head.linear.weight": sd["lm_head.weight"],
        "lm_head.linear.bias": sd["lm_head.bias"],
    }
    for i in range(config.num_hidden_layers):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[p + f"self_attn.{s}.{kind}"] for s in ("q_proj", "k_proj", "v_proj")]
            out[q + f"mixer.Wqkv.{kind}"] = torch.cat(qkv)
            out[q + f"mixer.out_proj.{kind}"] = sd[p + f"self_attn.dense.{kind}"]
            out[q + f"ln.{kind}"] = sd[p + f"input_layernorm.{kind}"]
            out[q + f"mlp.fc1.{kind}"] = sd[p + f"mlp.fc1.{kind}"]
            out[q + f"mlp.fc2.{kind}"] = sd[p + f"mlp.fc2.{kind}"]
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in out.items()}, directory / "model.safetensors")
    rotary_dim = int(config.hidden_size // config.num_attention_heads * config.rope_parameters["partial_rotary_factor"])
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "phi-msft",
                "n_embd": config.hidden_size,
                "n_head": config.num_attention_heads,
                "n_layer": config.num_hidden_layers,
                "n_inner": config.intermediate_size,
                "vocab_size": config.vocab_size,
                "n_positions": config.max_position_embeddings,
                "rotary_dim": rotary_dim,
                "layer_norm_epsilon": config.layer_norm_eps,
                "activation_function": "gelu_new",
            }
        )
    )


def test_legacy_msft_adapter_loads_into_ours(saved_hf, tmp_path):
    """PEFT adapter on phi-msft names (Wqkv, out_proj, fc1): ours equals transformers with the deltas merged."""
    from safetensors.torch import save_file

    hf, _ = saved_hf("phi-2")
    msft = tmp_path / "msft"
    _msft_checkpoint(hf, msft)
    gen = torch.Generator().manual_seed(3)
    tensors, r, alpha = {}, 4, 16
    merged = copy.deepcopy(hf)
    sd = merged.state_dict()
    for i in range(hf.config.num_hidden_layers):
        for legacy, hf_names in (
            ("mixer.Wqkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            ("mixer.out_proj", ["self_attn.dense"]),
            ("mlp.fc1", ["mlp.fc1"]),
        ):
            weights = [sd[f"model.layers.{i}.{n}.weight"] for n in hf_names]
            out_f, in_f = sum(w.shape[0] for w in weights), weights[0].shape[1]
            a, b = 0.2 * torch.randn(r, in_f, generator=gen), 0.2 * torch.randn(out_f, r, generator=gen)
            tensors[f"base_model.model.transformer.h.{i}.{legacy}.lora_A.weight"] = a
            tensors[f"base_model.model.transformer.h.{i}.{legacy}.lora_B.weight"] = b
            delta, start = b @ a * (alpha / r), 0
            for w in weights:  # transformers reference: the same update folded into q/k/v/dense/fc1
                w += delta[start : start + w.shape[0]]
                start += w.shape[0]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(tensors, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["Wqkv", "out_proj", "fc1"]})
    )
    ours = phi_models.from_pretrained(msft)
    phi_models.load_peft_adapter(ours, adapter)
    assert (_logits(ours.eval()) - _logits(merged)).abs().max() < TOL


# ---- refusals -------------------------------------------------------------------------------------------


def _write_adapter(directory, config, tensors):
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "adapter_model.safetensors")
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def test_refusals_name_the_key_or_option(saved_hf, tmp_path):
    hf, directory = saved_hf("phi-2")
    good = _peft_adapter(hf, dict(target_modules=["q_proj", "fc1"]), tmp_path / "good")
    del good
    config = json.loads((tmp_path / "good" / "adapter_config.json").read_text())
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "good" / "adapter_model.safetensors")
    cases = [
        (dict(config, peft_type="IA3"), tensors, "peft_type='IA3'"),
        (dict(config, use_qalora=True), tensors, "use_qalora=True"),
        (dict(config, init_lora_weights="pissa"), tensors, "init_lora_weights='pissa'"),
        (dict(config, target_modules=["q_proj", "query_key_value"]), tensors, "'query_key_value' does not exist"),
        (
            dict(config, modules_to_save=["score"]),
            dict(tensors, **{"base_model.model.score.weight": torch.zeros(2, 80)}),
            "'score'",
        ),
    ]
    key = "base_model.model.model.layers.0.mlp.fc1.lora_B.weight"
    wrong = dict(tensors, **{key: torch.zeros(999, 4)})
    cases.append((config, wrong, f"{key!r} has shape [999, 4] but this model needs [320, 4]"))
    for index, (cfg, tens, message) in enumerate(cases):
        model = phi_models.from_pretrained(directory)
        with pytest.raises(PhiModelError, match=None) as info:
            phi_models.load_peft_adapter(model, _write_adapter(tmp_path / f"bad{index}", cfg, tens))
        assert message in str(info.value) and "\n" not in str(info.value)
        assert not lora_core.lora_layers(model)  # refused before any layer was changed
