"""gguf-lora against llama.cpp's own convert_lora_to_gguf.py, run on our PEFT export of the same adapter
(phi_models.export_peft_adapter; a PEFT model built by hand from the same factors checks what they mean).

Equal where the converter is right; where it is wrong (it writes one alpha per file and ignores
rank_pattern/alpha_pattern/use_rslora, while llama.cpp scales each tensor by alpha over its own rank) ours
must give llama.cpp the update PEFT computes.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import lora_core
import phi_models
from philora.deploy import DeployError
from philora.deploy.gguf_lora import write_gguf_lora
from tests.deploy.conftest import dequantized, model_with_random_lora, read_gguf, run_converter, small_hf_model

pytest.importorskip("gguf")
pytest.importorskip("peft")

R, ALPHA = 4, 8.0


def ours_with_lora(hf_dir, targets, use_rslora=False, seed=1):
    """Our model from the HF checkpoint with random (non-zero) LoRA on ``targets``."""
    return model_with_random_lora(hf_dir, targets, r=R, alpha=ALPHA, seed=seed, scale=0.2, use_rslora=use_rslora)


def peft_twin(hf_dir, ours, peft_targets, lora_config_extra, copy):
    """transformers + PEFT with the same factors (``copy(peft_model, ours)`` fills them); checked by logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        peft_model = get_peft_model(
            hf, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=peft_targets, **lora_config_extra)
        ).eval()
    with torch.no_grad():
        copy(dict(peft_model.named_parameters()), dict(ours.named_parameters()))
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(peft_model(ids).logits, ours(ids), atol=2e-5, rtol=1e-4)
    return peft_model


def peft_key(layer: int, module: str, ab: str) -> str:
    return f"base_model.model.model.layers.{layer}.{module}.lora_{ab}.default.weight"


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest elementwise error relative to the largest entry of ``want``."""
    return float(((got - want).abs().max() / want.abs().max()).detach())


def effective(tensors: dict, alpha: float, name: str) -> torch.Tensor:
    """The update llama.cpp adds for one weight: alpha / rank * B @ A (rank = B's inner dimension)."""
    A, B = tensors[name + ".lora_a"], tensors[name + ".lora_b"]
    return alpha / B.shape[1] * B @ A


def test_phi2_slices_and_rslora_match_the_converter(tmp_path, llama_cpp_dir):
    hf_dir = tmp_path / "phi2-base"
    small_hf_model("phi", vocab=128).save_pretrained(hf_dir)
    ours = ours_with_lora(hf_dir, ["q_proj", "v_proj", "dense", "fc1"], use_rslora=True)
    config = ours.config
    q, kv = config.qkv_slices["q_proj"], config.qkv_slices["k_proj"]

    def copy(peft, mine):
        for i in range(config.num_hidden_layers):
            A = mine[f"model.layers.{i}.self_attn.qkv_proj.lora_A"]  # (2r, in): q group, then v group
            B = mine[f"model.layers.{i}.self_attn.qkv_proj.lora_B"]  # (q + kv, r): q rows, then v rows
            peft[peft_key(i, "self_attn.q_proj", "A")].copy_(A[:R])
            peft[peft_key(i, "self_attn.q_proj", "B")].copy_(B[:q])
            peft[peft_key(i, "self_attn.v_proj", "A")].copy_(A[R:])
            peft[peft_key(i, "self_attn.v_proj", "B")].copy_(B[q : q + kv])
            for module in ("self_attn.dense", "mlp.fc1"):
                for ab in "AB":
                    peft[peft_key(i, module, ab)].copy_(mine[f"model.layers.{i}.{module}.lora_{ab}"])

    peft_twin(hf_dir, ours, ["q_proj", "v_proj", "dense", "fc1"], {"use_rslora": True}, copy)
    peft_dir = phi_models.export_peft_adapter(ours, tmp_path / "phi2-adapter", base_model_name_or_path=str(hf_dir))
    theirs = tmp_path / "theirs.gguf"
    run_converter(
        llama_cpp_dir,
        "convert_lora_to_gguf.py",
        "--base",
        str(hf_dir),
        "--outtype",
        "f16",
        "--outfile",
        str(theirs),
        str(peft_dir),
    )
    adapter = tmp_path / "adapter.safetensors"
    lora_core.save_adapter(ours, adapter)
    mine = write_gguf_lora(
        *lora_core.read_adapter(adapter),
        config,
        tmp_path / "ours.gguf",
        dtype="f16",
        name=peft_dir.name,
        card_dir=peft_dir,
    )

    their_fields, their_tensors = read_gguf(theirs)
    my_fields, my_tensors = read_gguf(mine)
    assert list(my_tensors) == list(their_tensors)
    assert my_tensors == their_tensors  # names, types, shapes and bytes: f16 bit-exact
    # rsLoRA: the converter keeps alpha=8, so llama.cpp scales by 8/4 instead of PEFT's 8/sqrt(4).
    assert their_fields.pop("adapter.lora.alpha")[1] == pytest.approx(ALPHA)
    assert my_fields.pop("adapter.lora.alpha")[1] == pytest.approx(ALPHA * R**0.5)
    assert my_fields == their_fields
    assert their_fields["general.architecture"][1] == "phi2" and their_fields["adapter.type"][1] == "lora"


def test_phi3_fused_slices_are_scaled_right_where_the_converter_is_not(tmp_path, llama_cpp_dir):
    hf_dir = tmp_path / "phi3-base"
    small_hf_model("phi3", vocab=128, pad_token_id=0, bos_token_id=1, eos_token_id=2).save_pretrained(hf_dir)
    ours = ours_with_lora(hf_dir, ["q_proj", "v_proj", "o_proj", "up_proj"])
    config = ours.config
    q, kv, ff = config.qkv_slices["q_proj"], config.qkv_slices["k_proj"], config.intermediate_size

    def copy(peft, mine):
        for i in range(config.num_hidden_layers):
            A = mine[f"model.layers.{i}.self_attn.qkv_proj.lora_A"]
            B = mine[f"model.layers.{i}.self_attn.qkv_proj.lora_B"]
            block = torch.zeros(q + 2 * kv, 2 * R)  # PEFT's qkv_proj LoRA of rank 2r: zero rows for k
            block[:q, :R], block[q + kv :, R:] = B[:q], B[q:]
            peft[peft_key(i, "self_attn.qkv_proj", "A")].copy_(A)
            peft[peft_key(i, "self_attn.qkv_proj", "B")].copy_(block)
            up = torch.zeros(2 * ff, R)
            up[ff:] = mine[f"model.layers.{i}.mlp.gate_up_proj.lora_B"]
            peft[peft_key(i, "mlp.gate_up_proj", "A")].copy_(mine[f"model.layers.{i}.mlp.gate_up_proj.lora_A"])
            peft[peft_key(i, "mlp.gate_up_proj", "B")].copy_(up)
            for ab in "AB":
                peft[peft_key(i, "self_attn.o_proj", ab)].copy_(mine[f"model.layers.{i}.self_attn.o_proj.lora_{ab}"])

    extra = {"rank_pattern": {"qkv_proj": 2 * R}, "alpha_pattern": {"qkv_proj": 2 * ALPHA}}
    peft_model = peft_twin(hf_dir, ours, ["qkv_proj", "o_proj", "gate_up_proj"], extra, copy)
    peft_dir = phi_models.export_peft_adapter(ours, tmp_path / "phi3-adapter", base_model_name_or_path=str(hf_dir))
    exported = json.loads((peft_dir / "adapter_config.json").read_text())
    assert exported["rank_pattern"] and exported["alpha_pattern"]  # what the converter ignores
    theirs = tmp_path / "theirs.gguf"
    run_converter(
        llama_cpp_dir,
        "convert_lora_to_gguf.py",
        "--base",
        str(hf_dir),
        "--outtype",
        "q8_0",
        "--outfile",
        str(theirs),
        str(peft_dir),
    )
    adapter = tmp_path / "adapter.safetensors"
    lora_core.save_adapter(ours, adapter)
    mine = write_gguf_lora(
        *lora_core.read_adapter(adapter),
        config,
        tmp_path / "ours.gguf",
        dtype="q8_0",
        name=peft_dir.name,
        card_dir=peft_dir,
    )

    their_fields, their_tensors = read_gguf(theirs)
    my_fields, my_tensors = read_gguf(mine)
    assert my_fields == their_fields  # alpha 8 in both: the rank-r tensors are the common case
    assert [(n, t[0], t[1]) for n, t in my_tensors.items()] == [(n, t[0], t[1]) for n, t in their_tensors.items()]
    qkv_b = {f"blk.{i}.attn_qkv.weight.lora_b" for i in range(config.num_hidden_layers)}
    assert {n: t for n, t in my_tensors.items() if n not in qkv_b} == {
        n: t for n, t in their_tensors.items() if n not in qkv_b
    }  # equal q8_0 (and f16 fallback) blocks

    # The update llama.cpp computes from each file, against PEFT's own delta weights.
    alpha = my_fields["adapter.lora.alpha"][1]
    my_values, their_values = dequantized(mine), dequantized(theirs)
    for i in range(config.num_hidden_layers):
        layer = peft_model.base_model.model.model.layers[i]
        for gguf_name, module in (
            (f"blk.{i}.attn_qkv.weight", layer.self_attn.qkv_proj),
            (f"blk.{i}.ffn_up.weight", layer.mlp.gate_up_proj),
            (f"blk.{i}.attn_output.weight", layer.self_attn.o_proj),
        ):
            want = module.get_delta_weight("default")
            assert relative_error(effective(my_values, alpha, gguf_name), want) < 0.01  # q8_0 rounding only
            if "attn_qkv" in gguf_name:  # the converter's file: half PEFT's update (rank 2r, one alpha)
                assert relative_error(effective(their_values, alpha, gguf_name), want) > 0.4
                assert relative_error(2 * effective(their_values, alpha, gguf_name), want) < 0.01


@pytest.mark.parametrize("case", ["dora", "embedding", "lm_head"])
def test_adapters_llama_cpp_cannot_take_are_refused(tmp_path, case):
    model = phi_models.from_pretrained("tiny")
    targets = {"dora": ["dense"], "embedding": ["embed_tokens", "dense"], "lm_head": ["lm_head"]}[case]
    lora_core.inject(model, targets, r=2, lora_alpha=4, use_dora=case == "dora")
    adapter = tmp_path / "adapter.safetensors"
    lora_core.save_adapter(model, adapter)
    out = tmp_path / "out.gguf"
    with pytest.raises(
        DeployError, match={"dora": "DoRA", "embedding": "model.embed_tokens", "lm_head": "lm_head"}[case]
    ):
        write_gguf_lora(*lora_core.read_adapter(adapter), model.config, out)
    assert not out.exists()
