"""The run directory as the handle: resolved train_config.yaml, open_run, load_for_inference, peft/ in PEFT."""

from __future__ import annotations

import warnings

import pytest
import torch
import yaml

import lora_core
import phi_models
from philora.runs import RunError, load_for_inference, open_run
from philora.training.config import parse_config

TOL = 1e-4
INPUT = torch.tensor([[5, 17, 99, 3, 64, 8, 120, 41, 1500, 2000]])


@torch.no_grad()
def _logits(model):
    out = model(INPUT)
    return out.logits if hasattr(out, "logits") else out


def test_train_config_records_resolved_values(tiny_run):
    config = yaml.safe_load((tiny_run / "train_config.yaml").read_text())
    resolved = config["resolved"]
    assert resolved["base_model"] == "tiny" and resolved["dtype"] == "fp32" and resolved["quantize"] is None
    assert resolved["template"] == "phi3" and resolved["targets"] == ["q_proj", "v_proj", "dense", "fc1"]
    assert resolved["stop_tokens"] == ["<|endoftext|>", "<|end|>"] and len(resolved["stop_token_ids"]) == 2
    assert resolved["lora"]["r"] == 16 and len(resolved["lora"]["adapted"]) == 4 * 4
    # still readable back as --config: the resolved section is skipped, the options reproduce the run
    again = parse_config(["--config", str(tiny_run / "train_config.yaml")])
    assert again.model == "tiny" and again.targets == "q_proj,v_proj,dense,fc1" and again.max_steps == 3


def test_open_run_fields(tiny_run):
    run = open_run(tiny_run)
    assert run.base_model == "tiny" and run.template == "phi3" and run.quantize is None and run.dtype == "fp32"
    assert run.adapter_file == tiny_run / "adapter.safetensors" and run.peft_dir == tiny_run / "peft"
    assert run.final_eval["kind"] == "eval" and run.final_eval["loss"] > 0


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        open_run(tmp_path)
    with pytest.raises(RunError, match="no such run directory"):
        open_run(tmp_path / "missing")
    (tmp_path / "train_config.yaml").write_text("just: text\n")
    with pytest.raises(RunError, match="not a philora train_config.yaml"):
        open_run(tmp_path)


def test_peft_dir_of_a_training_run_loads_in_peft(tiny_run, tiny_hf_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
        theirs = PeftModel.from_pretrained(hf, tiny_run / "peft").eval()
    loaded = load_for_inference(tiny_run, device="cpu")
    ours = _logits(loaded.model)
    assert (_logits(theirs) - ours).abs().max() < TOL
    with lora_core.disable_adapters(loaded.model):
        assert (_logits(loaded.model) - ours).abs().max() > 1e-3  # 3 steps at lr 1e-2 moved it


def test_load_for_inference_same_model_every_way(tiny_run):
    from_run = load_for_inference(tiny_run, device="cpu")
    from_peft = load_for_inference("tiny", adapter=tiny_run / "peft", device="cpu")
    from_file = load_for_inference("tiny", adapter=tiny_run / "adapter.safetensors", device="cpu")
    assert from_run.template == "phi3" and from_run.run is not None and from_peft.run is None
    expected = _logits(from_run.model)
    assert torch.equal(_logits(from_peft.model), expected) and torch.equal(_logits(from_file.model), expected)


def test_adapter_for_another_base_names_key_and_shapes(tmp_path):
    other = phi_models.PhiForCausalLM(
        phi_models.PhiConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
    )
    lora_core.inject(other, targets=["fc1"], r=4, lora_alpha=4)
    lora_core.save_adapter(other, tmp_path / "other.safetensors")
    with pytest.raises(RunError) as info:
        load_for_inference("tiny", adapter=tmp_path / "other.safetensors", device="cpu")
    message = str(info.value)
    assert "model.layers.0.mlp.fc1.lora_A: file (4, 32) vs model (4, 256)" in message and "\n" not in message
