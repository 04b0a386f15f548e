"""Every real adapter_config.json from public Phi fine-tunes (realcases 05b) loads or is refused as documented.

The weights of those adapters are not public here, so each test writes the tensors PEFT would have saved for
that config on its base (the modules its target_modules match on the transformers model, at test width, random
values), next to the genuine config file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lora_core
import phi_models
from phi_models import PhiConfig, PhiForCausalLM, PhiModelError
from phi_models.peft_keys import hf_module_names, scaling

REALCASES = Path(__file__).resolve().parents[2] / ".." / "shared" / "realcases" / "05b_adapter_configs_in_the_wild"
pytestmark = pytest.mark.skipif(not REALCASES.is_dir(), reason="../shared/realcases/05b is not present")

LEGACY = {"Wqkv": "mixer.Wqkv", "out_proj": "mixer.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
# file prefix -> None (loads) or the error it is refused with
EXPECTED = {
    "phi-1_5__GowthamNats": None,
    "phi-1_5__megajajo": None,
    "phi-2__Azreal18": None,
    "phi-2__HashirDS": None,
    "phi-2__Nabeegh-Ahmed": None,
    "phi-2__henryhmko-bunny": None,
    "phi-2__shettysaish20": "target_modules entry 'query_key_value' does not exist in a phi model",
    "Phi-3__HeavyMetalAlchemist": None,
    "Phi-3-mini-4k__dhanushmekala04": "target_modules entry 'k_proj' does not exist in a phi3 model",
    "Phi-3-mini-4k-unsloth__Bharath-vs-07": "target_modules entry 'up_proj' does not exist in a phi3 model",
}


def _model_for(base: str) -> PhiForCausalLM:
    phi3 = "phi-3" in base.lower()
    config = PhiConfig(
        model_type="phi3" if phi3 else "phi",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        torch_dtype="float32",
    )
    model = PhiForCausalLM(config)
    model.init_weights(0)
    return model.eval()


def _peft_tensors(model: PhiForCausalLM, config: dict) -> tuple[dict[str, torch.Tensor], int]:
    """What PEFT saves for ``config`` on the model's transformers (or, for legacy names, phi-msft) tree."""
    targets, r = config["target_modules"], config["r"]
    gen = torch.Generator().manual_seed(0)
    tensors, count = {}, 0
    legacy = any(t in ("Wqkv", "out_proj") for t in targets)
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.out_features, module.in_features)
    for name in hf_module_names(model):
        leaf = name.rpartition(".")[2]
        if legacy:
            mapped = {"qkv_proj": "Wqkv", "dense": "out_proj"}.get(leaf, leaf)
            if mapped not in targets:
                continue
            layer = name.split(".")[2]
            path = f"transformer.h.{layer}.{LEGACY[mapped]}"
        elif leaf in targets:
            path = name
        else:
            continue
        if name in shapes:
            out_f, in_f = shapes[name]
        else:  # a phi q/k/v slice of our fused qkv_proj
            fused = model.get_submodule(name.rpartition(".")[0] + ".qkv_proj")
            out_f, in_f = fused.lora_slices[leaf], fused.in_features
        tensors[f"base_model.model.{path}.lora_A.weight"] = torch.randn(r, in_f, generator=gen)
        tensors[f"base_model.model.{path}.lora_B.weight"] = torch.randn(out_f, r, generator=gen)
        count += 1
    return tensors, count


def _case_files():
    return sorted(REALCASES.glob("*__adapter_config.json")) if REALCASES.is_dir() else []


@pytest.mark.parametrize("config_file", _case_files(), ids=lambda p: p.name.split("__adapter")[0])
def test_real_config_loads_or_is_refused(config_file, tmp_path):
    key = next(k for k in EXPECTED if config_file.name.startswith(k + "__"))
    config = json.loads(config_file.read_text())
    model = _model_for(config["base_model_name_or_path"])
    tensors, count = _peft_tensors(model, config)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copyfile(config_file, adapter / "adapter_config.json")  # the genuine bytes
    save_file(tensors, adapter / "adapter_model.safetensors")
    if EXPECTED[key] is not None:
        with pytest.raises(PhiModelError) as info:
            phi_models.load_peft_adapter(model, adapter)
        assert EXPECTED[key] in str(info.value)
        assert not lora_core.lora_layers(model)
        return
    assert count > 0
    with torch.no_grad():
        before = model(torch.arange(10)[None])
    phi_models.load_peft_adapter(model, adapter)
    layers = [m for m in lora_core.lora_layers(model) if m.has_lora()]
    assert layers
    want = scaling(config["lora_alpha"], config["r"], bool(config.get("use_rslora")))
    assert all(abs(layer.scaling - want) < 1e-9 for layer in layers)
    with torch.no_grad():
        assert (model(torch.arange(10)[None]) - before).abs().max() > 1e-3


def test_real_broken_two_byte_safetensors_is_refused(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copyfile(REALCASES / "phi-1_5__megajajo__2024-05__adapter_config.json", adapter / "adapter_config.json")
    shutil.copyfile(
        REALCASES / "phi-1_5__megajajo__2024-05__adapter_model.safetensors.BROKEN-2-bytes",
        adapter / "adapter_model.safetensors",
    )
    with pytest.raises(PhiModelError, match="adapter_model.safetensors is not a readable safetensors file"):
        phi_models.load_peft_adapter(_model_for("microsoft/phi-1_5"), adapter)
