"""export_merged: the base with its LoRA folded in, written as a Hugging Face checkpoint.

The directory holds config.json (transformers 5 format, ``rope_parameters``), safetensors shards with
``model.safetensors.index.json``, generation_config.json and the base model's tokenizer files, so that
``transformers.AutoModelForCausalLM.from_pretrained(dir)`` loads it. phi-1.5/2 q/k/v are written as
separate ``q_proj``/``k_proj``/``v_proj`` tensors (transformers' layout). A 4-bit base is dequantized.
The model itself is not changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from phi_models.config import PhiConfig
from phi_models.errors import PhiModelError
from phi_models.loading import parse_dtype

SHARD_BYTES = 2 * 2**30
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _dense_weight(module: nn.Module) -> torch.Tensor:
    """The module's weight as a dense tensor, LoRA merged in (a 4-bit base dequantized first)."""
    from lora_core import LoRALayer
    from lora_core.linear4bit import dequantized_weight, is_linear4bit

    if is_linear4bit(module) or hasattr(module, "dequantized_weight"):
        base = module.dequantized_weight() if hasattr(module, "dequantized_weight") else dequantized_weight(module)
    else:
        base = module.weight.detach()
        if isinstance(module, LoRALayer) and module.merged:  # already merged in place: that is the merged weight
            return base
    if isinstance(module, LoRALayer) and module.has_lora() and not module.adapters_disabled:
        return module.merged_weight(base)
    return base


@torch.no_grad()
def merged_tensors(model: nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(transformers key, tensor) for every weight of the merged model, one module at a time."""
    config: PhiConfig = model.config
    seen = set()
    for name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        for attr, param in params.items():
            if attr.startswith("lora_") or id(param) in seen:
                continue
            seen.add(id(param))
            key = f"{name}.{attr}"
            if key == "lm_head.weight" and config.tie_word_embeddings:
                continue
            tensor = _dense_weight(module) if attr == "weight" else param.detach()
            tensor = tensor.to(dtype or tensor.dtype).cpu()
            if config.model_type == "phi" and name.endswith("self_attn.qkv_proj"):
                parent = name.rpartition(".")[0]
                # [Q | K | V] rows -> transformers' separate projections
                for slot, piece in zip(config.qkv_slices, tensor.split(list(config.qkv_slices.values()))):
                    yield f"{parent}.{slot}.{attr}", piece.contiguous()
            else:
                yield key, tensor.contiguous()


def hf_config_dict(config: PhiConfig, dtype: torch.dtype) -> dict:
    """config.json for transformers 5 (``PhiForCausalLM`` / ``Phi3ForCausalLM``)."""
    rope = {"rope_type": config.rope_type, "rope_theta": config.rope_theta}
    if config.model_type == "phi" or config.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = config.partial_rotary_factor
    if config.rope_type == "longrope":
        rope.update(
            short_factor=config.short_factor,
            long_factor=config.long_factor,
            original_max_position_embeddings=config.original_max_position_embeddings,
        )
        if config.rope_attention_factor is not None:
            rope["attention_factor"] = config.rope_attention_factor
    out = {
        "architectures": ["PhiForCausalLM" if config.model_type == "phi" else "Phi3ForCausalLM"],
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_act": config.hidden_act,
        "tie_word_embeddings": config.tie_word_embeddings,
        "resid_pdrop": config.resid_pdrop,
        "embd_pdrop": config.embd_pdrop,
        "attention_dropout": config.attention_dropout,
        "rope_parameters": rope,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "dtype": _DTYPE_NAMES.get(dtype, "float32"),
        "use_cache": True,
    }
    if config.model_type == "phi":
        out["layer_norm_eps"] = config.norm_eps
    else:
        out.update(rms_norm_eps=config.norm_eps, sliding_window=config.sliding_window, attention_bias=False)
        if config.original_max_position_embeddings is not None:
            out["original_max_position_embeddings"] = config.original_max_position_embeddings
    return out


def _write_json(path: Path, data: dict) -> None:
    from lora_core import atomic_write

    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _copy_tokenizer(base_model: str | None, revision: str | None, out: Path) -> list[str]:
    """Copy the base model's tokenizer files (the tiny preset: its tokenizer.json plus a minimal config)."""
    from lora_core import atomic_write
    from phi_models.presets import tiny_tokenizer_path
    from phi_models.source import resolve_source

    if base_model is None:
        return []
    source = resolve_source(base_model, revision)
    copied = []
    if source.kind == "tiny":
        atomic_write(out / "tokenizer.json", lambda tmp: shutil.copyfile(tiny_tokenizer_path(), tmp))
        _write_json(
            out / "tokenizer_config.json",
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
        )
        return ["tokenizer.json", "tokenizer_config.json"]
    for name in TOKENIZER_FILES:
        path = source.file(name, required=False)
        if path is not None:
            atomic_write(out / name, lambda tmp, src=path: shutil.copyfile(src, tmp))
            copied.append(name)
    return copied


def export_merged(
    model: nn.Module,
    out_dir: str | Path,
    dtype: str | torch.dtype | None = None,
    *,
    base_model: str | None = None,
    revision: str | None = None,
    stop_token_ids: list[int] | None = None,
    extra_info: dict | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Write ``model`` with its LoRA merged as a Hugging Face checkpoint in ``out_dir``; returns the path.

    ``dtype`` (default: the base weights' dtype, fp32 for a 4-bit base) is the stored dtype. ``base_model``
    (preset, hub id or directory) is where the tokenizer files are copied from. ``extra_info`` goes into
    ``philora.json`` (template, stop tokens, where the adapter came from).
    """
    from safetensors.torch import save_file

    from lora_core import atomic_write

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PhiModelError(f"{out}: exists and is not an empty directory; pass a new --out directory")
    base_dtype = model.model.embed_tokens.weight.dtype
    target = parse_dtype(dtype, base_dtype if base_dtype.is_floating_point else torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in merged_tensors(model, target):
        nbytes = tensor.numel() * tensor.element_size()
        if size and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map, total = {}, 0
    for index, tensors in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        atomic_write(out / filename, lambda tmp, t=tensors: save_file(t, tmp, metadata={"format": "pt"}))
        for key, tensor in tensors.items():
            weight_map[key] = filename
            total += tensor.numel() * tensor.element_size()
    _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    config = model.config
    _write_json(out / "config.json", hf_config_dict(config, target))
    stops = list(stop_token_ids or config.stop_token_ids)
    generation = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": stops[0] if len(stops) == 1 else stops or None,
        "pad_token_id": config.pad_token_id,
    }
    _write_json(out / "generation_config.json", {k: v for k, v in generation.items() if v is not None})
    copied = _copy_tokenizer(base_model, revision, out)
    info = {
        "base_model": base_model,
        "revision": revision,
        "dtype": _DTYPE_NAMES.get(target),
        "tokenizer_files": copied,
        **(extra_info or {}),
    }
    _write_json(out / "philora.json", info)
    return out
