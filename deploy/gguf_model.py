"""A complete model GGUF (weights, hyperparameters, tokenizer, chat template) for llama.cpp and Ollama.

Keys, tensor names, tensor types and encodings follow llama.cpp's ``convert_hf_to_gguf.py`` for the ``phi2``
(phi-1.5/2) and ``phi3`` (Phi-3, 3.5, 4-mini) architectures; the tests compare the two on the same checkpoint.
phi-1.5/2 q/k/v are written as llama.cpp's separate attn_q/attn_k/attn_v (the converter's default, and what a
gguf-lora adapter for that base addresses).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from phi_models import PhiConfig
from philora.deploy.errors import DeployError
from philora.deploy.gguf_common import (
    add_general_metadata,
    encode_tensor,
    file_type,
    gguf_arch,
    require_gguf,
    tensor_namer,
    tensor_qtype,
    write_file,
)
from philora.deploy.gguf_vocab import add_vocab


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our model's weights under transformers' names (phi-1.5/2's fused qkv_proj split back into q/k/v)."""
    config: PhiConfig = model.config
    leftover = [n for n, _ in model.named_parameters() if "lora_" in n]
    if leftover:
        raise DeployError(
            f"the model still has LoRA layers ({leftover[0]} ...): merge them first (lora_core.merge_and_unload)"
        )
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq") or ".rotary_emb." in name:
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd, as for an HF checkpoint without lm_head
        if config.model_type == "phi" and ".self_attn.qkv_proj." in name:
            parent, _, kind = name.rpartition(".qkv_proj.")
            for slot, part in zip(config.qkv_slices, tensor.split(list(config.qkv_slices.values()), dim=0)):
                out[f"{parent}.{slot}.{kind}"] = part
            continue
        out[name] = tensor
    return dict(sorted(out.items()))


def add_hyperparameters(writer, config: PhiConfig, ftype) -> None:
    """The <arch>.* keys llama.cpp reads for phi2 / phi3."""
    n_embd, n_head = config.hidden_size, config.num_attention_heads
    rope_dims = int(config.partial_rotary_factor * n_embd) // n_head
    writer.add_context_length(config.max_position_embeddings)
    if config.model_type == "phi":
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(4 * n_embd)  # llama.cpp's phi2 reads the MLP width from fc1 itself
        writer.add_block_count(config.num_hidden_layers)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head)
        writer.add_layer_norm_eps(config.norm_eps)
        writer.add_rope_dimension_count(rope_dims)
        writer.add_file_type(ftype)
        writer.add_add_bos_token(False)
        return
    writer.add_rope_scaling_orig_ctx_len(config.original_max_position_embeddings or config.max_position_embeddings)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_dimension_count(rope_dims)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_file_type(ftype)
    writer.add_sliding_window(config.sliding_window or 0)  # 0 tells llama.cpp there is no window


def longrope_tensors(writer, config: PhiConfig) -> list[tuple[str, torch.Tensor]]:
    """rope_factors_long/short (and the attention factor key) for LongRoPE models; empty otherwise."""
    gguf = require_gguf()
    if config.rope_type != "longrope":
        return []
    original = config.original_max_position_embeddings or config.max_position_embeddings
    scale = config.max_position_embeddings / original
    # llama.cpp's converter derives the factor from the lengths; so do we, so llama.cpp computes what we do.
    writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0)
    names = gguf.TENSOR_NAMES
    return [
        (names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight", torch.tensor(config.long_factor)),
        (names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight", torch.tensor(config.short_factor)),
    ]


def write_gguf_model(
    model: torch.nn.Module,
    tokenizer_dir: Path,
    out: Path,
    *,
    dtype: str = "f16",
    name: str | None = None,
    card_dir: Path | None = None,
) -> Path:
    """Write ``model`` (ours, LoRA merged or none) with the tokenizer files in ``tokenizer_dir`` as one GGUF.

    ``dtype`` f32/f16/bf16/q8_0 applies to the 2-D weights (norms, biases and rope factors stay f32).
    ``name``/``card_dir`` feed general.* as the converter's model directory does (its name, config, card).
    """
    gguf = require_gguf()
    config: PhiConfig = model.config
    out, tokenizer_dir = Path(out), Path(tokenizer_dir)
    ftype = file_type(dtype)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf_arch(config)])
    to_gguf = tensor_namer(config)
    named = longrope_tensors(writer, config)
    named += [(to_gguf(hf_name), tensor) for hf_name, tensor in hf_state_dict(model).items()]
    for gguf_name, tensor in named:
        data, qtype = encode_tensor(tensor, tensor_qtype(gguf_name, tensor.dim(), ftype))
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    writer.add_type(gguf.GGUFType.MODEL)
    add_general_metadata(writer, name or out.stem, card_dir, writer.get_total_parameter_count()[0], size_label=True)
    add_hyperparameters(writer, config, ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocab(writer, config, tokenizer_dir)
    write_file(writer, out)
    return out
