"""Model GGUF against llama.cpp's own convert_hf_to_gguf.py run on our merged HF export (phi_models.export_merged)
of random phi-2 / Phi-3 fine-tunes with the real phi-2 and Phi-3.5 tokenizers: same keys and values, same tensor
names, shapes, types and bytes."""

from __future__ import annotations

import shutil

import pytest

import lora_core
import phi_models
from philora.deploy.gguf_model import write_gguf_model
from tests.deploy.conftest import model_with_random_lora, read_gguf, realcase, run_converter, small_hf_model

pytest.importorskip("gguf")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def checkpoint_with_tokenizer(tmp_path, kind: str, tokenizer_folder: str, vocab: int, **overrides):
    tokenizer = realcase(tokenizer_folder)
    hf_dir = tmp_path / f"{kind}-model"
    small_hf_model(kind, vocab=vocab, **overrides).save_pretrained(hf_dir)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, hf_dir / name)
    return hf_dir


def fine_tuned(hf_dir, targets):
    """Our model of the checkpoint with a random (non-zero) LoRA on ``targets``."""
    return model_with_random_lora(hf_dir, targets, r=4, alpha=8, seed=3, scale=0.1)


def compare_with_converter(tmp_path, llama_cpp_dir, hf_dir, dtype, targets):
    """Our merged HF export goes through the converter; our writer takes our own merged model."""
    model = fine_tuned(hf_dir, targets)
    merged_dir = phi_models.export_merged(model, tmp_path / "merged", dtype="float32", base_model=str(hf_dir))
    theirs = tmp_path / "theirs.gguf"
    run_converter(llama_cpp_dir, "convert_hf_to_gguf.py", "--outtype", dtype, "--outfile", str(theirs), str(merged_dir))
    lora_core.merge_and_unload(model)
    ours = write_gguf_model(
        model, hf_dir, tmp_path / "ours.gguf", dtype=dtype, name=merged_dir.name, card_dir=merged_dir
    )
    their_fields, their_tensors = read_gguf(theirs)
    my_fields, my_tensors = read_gguf(ours)
    assert sorted(my_fields) == sorted(their_fields)
    for key in their_fields:
        assert my_fields[key] == their_fields[key], key
    assert sorted(my_tensors) == sorted(their_tensors)
    for name in their_tensors:
        assert my_tensors[name][:2] == their_tensors[name][:2], name  # type and shape
        assert my_tensors[name][2] == their_tensors[name][2], name  # bytes: bit-exact floats, equal q8_0 blocks
    return my_fields, my_tensors


@pytest.mark.parametrize("dtype", ["q8_0"])
def test_phi2_model_equals_the_converters(tmp_path, llama_cpp_dir, dtype):
    hf_dir = checkpoint_with_tokenizer(
        tmp_path, "phi", "01_phi2_tokenizer", vocab=50304, bos_token_id=50256, eos_token_id=50256
    )
    fields, tensors = compare_with_converter(tmp_path, llama_cpp_dir, hf_dir, dtype, ["q_proj", "v_proj", "fc2"])
    assert fields["tokenizer.ggml.pre"][1] == "phi-2" and fields["tokenizer.ggml.model"][1] == "gpt2"
    assert tensors["blk.0.attn_q.weight"][0] == dtype.upper() and tensors["blk.0.attn_q.bias"][0] == "F32"


def test_phi3_longrope_model_equals_the_converters(tmp_path, llama_cpp_dir):
    rope = {
        "type": "longrope",
        "short_factor": [1.0 + i / 10 for i in range(8)],
        "long_factor": [2.0 + i for i in range(8)],
    }
    hf_dir = checkpoint_with_tokenizer(
        tmp_path,
        "phi3",
        "02d_phi35_mini_instruct",
        vocab=32064,
        rope_scaling=rope,
        original_max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=32000,
        pad_token_id=32000,
    )
    fields, tensors = compare_with_converter(tmp_path, llama_cpp_dir, hf_dir, "bf16", ["q_proj", "o_proj", "up_proj"])
    assert fields["tokenizer.ggml.model"][1] == "llama"
    assert "{% for message in messages %}" in fields["tokenizer.chat_template"][1]
    assert "rope_factors_long.weight" in tensors and tensors["blk.1.ffn_up.weight"][0] == "BF16"
