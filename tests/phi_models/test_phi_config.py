"""PhiConfig parsing of the three config.json dialects (docs/architecture.md, "Config dialects")."""

from __future__ import annotations

import math

import pytest

from phi_models import PhiConfig, PhiModelError

PHI3_128K = {  # the official Phi-3-mini-128k layout (transformers 4.x style, rope_scaling at top level)
    "model_type": "phi3", "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "rope_theta": 10000.0,
    "rope_scaling": {"type": "su", "short_factor": [1.1] * 48, "long_factor": [2.0] * 48},
    "original_max_position_embeddings": 4096, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "sliding_window": 262144, "tie_word_embeddings": False, "eos_token_id": 32000,
    "torch_dtype": "bfloat16",
}  # fmt: skip


def test_phi3_128k_official_layout():
    c = PhiConfig.from_dict(PHI3_128K)
    assert c.rope_type == "longrope" and c.rotary_dim == 96 and c.head_dim == 96
    assert c.longrope_attention_factor == pytest.approx(math.sqrt(17 / 12))
    assert c.qkv_slices == {"q_proj": 3072, "k_proj": 3072, "v_proj": 3072}


def test_phi4_mini_shapes():
    raw = dict(PHI3_128K, vocab_size=200064, num_attention_heads=24, num_key_value_heads=8,
               partial_rotary_factor=0.75, tie_word_embeddings=True)  # fmt: skip
    c = PhiConfig.from_dict(raw)
    assert (c.head_dim, c.rotary_dim, c.kv_heads) == (128, 96, 8)
    assert c.qkv_slices == {"q_proj": 3072, "k_proj": 1024, "v_proj": 1024}


def test_missing_partial_rotary_defaults():
    base = {
        "vocab_size": 100,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
    }
    assert PhiConfig.from_dict(dict(base, model_type="phi")).rotary_dim == 8  # 0.5 for phi
    assert PhiConfig.from_dict(dict(base, model_type="phi3")).rotary_dim == 16  # 1.0 for phi3


def test_phi_msft_translation():
    c = PhiConfig.from_dict({
        "model_type": "phi-msft", "n_embd": 2560, "n_layer": 32, "n_head": 32, "n_head_kv": None,
        "n_inner": None, "n_positions": 2048, "rotary_dim": 32, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "vocab_size": 51200, "resid_pdrop": 0.1,
    })  # fmt: skip
    assert (c.model_type, c.hidden_size, c.intermediate_size, c.kv_heads) == ("phi", 2560, 10240, 32)
    assert c.partial_rotary_factor == pytest.approx(0.4) and c.rotary_dim == 32 and c.resid_pdrop == 0.1


def test_round_trip():
    c = PhiConfig.from_dict(PHI3_128K)
    assert PhiConfig.from_dict(c.to_dict()) == c


def test_config_errors():
    with pytest.raises(PhiModelError, match="unknown model_type 'gpt2'"):
        PhiConfig.from_dict(dict(PHI3_128K, model_type="gpt2"))
    bad = dict(PHI3_128K, rope_scaling={"type": "longrope", "short_factor": [1.0] * 47, "long_factor": [1.0] * 48})
    with pytest.raises(PhiModelError, match="short_factor must hold rotary_dim/2 = 48 values, got 47"):
        PhiConfig.from_dict(bad)
    with pytest.raises(PhiModelError, match="malformed config"):
        PhiConfig.from_dict({"model_type": "phi3"})
    with pytest.raises(PhiModelError, match="sliding_window_mode"):
        PhiConfig(sliding_window_mode="both")


def test_mixformer_config_reads_like_phi_msft():
    c = PhiConfig.from_dict({"model_type": "mixformer-sequential", "n_embd": 2048, "n_layer": 24, "n_head": 32,
                             "rotary_dim": 32, "vocab_size": 51200})  # fmt: skip
    assert (c.model_type, c.head_dim, c.rotary_dim, c.intermediate_size) == ("phi", 64, 32, 8192)
