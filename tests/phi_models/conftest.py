"""Shared helpers for phi_models tests: small transformers reference models written to disk."""

from __future__ import annotations

import warnings

import pytest
import torch

# Widths are tiny so every case runs in about a second; head dims keep the real models' quirks
# (phi-2's partial rotary 0.4, Phi-4-mini's GQA + partial rotary 0.75 + tied head).
SHAPES = {
    "phi-1_5": dict(model_type="phi", hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.5),
    "phi-2": dict(model_type="phi", hidden_size=80, num_attention_heads=4, partial_rotary_factor=0.4),
    "phi-3-mini-4k": dict(model_type="phi3", hidden_size=64, num_attention_heads=4, sliding_window=7),
    "phi-3-mini-128k": dict(model_type="phi3", hidden_size=64, num_attention_heads=4, longrope=True),
    "phi-3.5-mini": dict(model_type="phi3", hidden_size=64, num_attention_heads=4, longrope=True),
    "phi-4-mini": dict(
        model_type="phi3", hidden_size=96, num_attention_heads=6, num_key_value_heads=2,
        partial_rotary_factor=0.75, longrope=True, tie_word_embeddings=True,
    ),
}  # fmt: skip
VOCAB = 128
ORIGINAL_MAX = 64


def hf_config(shape: str, layers: int = 2):
    """A transformers config shaped like one of the Phi models, at test width."""
    from transformers import Phi3Config, PhiConfig

    spec = dict(SHAPES[shape])
    model_type = spec.pop("model_type")
    longrope = spec.pop("longrope", False)
    common = dict(vocab_size=VOCAB, num_hidden_layers=layers, intermediate_size=4 * spec["hidden_size"])
    if model_type == "phi":
        return PhiConfig(**common, **spec, bos_token_id=0, eos_token_id=0)
    if longrope:
        head_dim = spec["hidden_size"] // spec["num_attention_heads"]
        half = int(head_dim * spec.get("partial_rotary_factor", 1.0)) // 2
        gen = torch.Generator().manual_seed(len(shape))
        short = (1.0 + torch.rand(half, generator=gen)).tolist()
        long = (1.0 + 20 * torch.rand(half, generator=gen)).tolist()
        spec.update(
            rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long},
            original_max_position_embeddings=ORIGINAL_MAX,
            max_position_embeddings=32 * ORIGINAL_MAX,
        )
    return Phi3Config(**common, **spec, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def hf_model(shape: str, layers: int = 2, seed: int = 0):
    """A randomly initialised transformers model (fp32, eval mode)."""
    from transformers import Phi3ForCausalLM, PhiForCausalLM

    config = hf_config(shape, layers)
    torch.manual_seed(seed)
    cls = PhiForCausalLM if config.model_type == "phi" else Phi3ForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(config).eval()
    # Random init leaves norms at 1/0; perturb them so a wrong norm mapping would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def saved_hf(tmp_path):
    """Factory: save a transformers model as safetensors and return (hf_model, directory)."""

    def make(shape: str, layers: int = 2, max_shard_size: str | None = None, seed: int = 0):
        model = hf_model(shape, layers, seed)
        directory = tmp_path / shape
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(directory, safe_serialization=True, **kwargs)
        return model, directory

    return make
