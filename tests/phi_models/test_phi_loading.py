"""Loading: legacy phi-msft layout, hub cache layout, and the one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import phi_models
from phi_models import HubError, PhiModelError
from tests.phi_models.conftest import VOCAB

TOL = 1e-4


def _logits(model, seed=0):
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids)


def _write_phi_msft(hf, directory):
    """The Nov 2023 remote-code layout: transformer.h.N.mixer.Wqkv, lm_head.ln/linear, phi-msft config."""
    cfg = hf.config
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    legacy = {"transformer.embd.wte.weight": state.pop("model.embed_tokens.weight")}
    for i in range(cfg.num_hidden_layers):
        old, new = f"model.layers.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            legacy[f"{new}mixer.Wqkv.{kind}"] = torch.cat(
                [state.pop(f"{old}self_attn.{p}.{kind}") for p in ("q_proj", "k_proj", "v_proj")]
            )
            legacy[f"{new}ln.{kind}"] = state.pop(f"{old}input_layernorm.{kind}")
            legacy[f"{new}mixer.out_proj.{kind}"] = state.pop(f"{old}self_attn.dense.{kind}")
            legacy[f"{new}mlp.fc1.{kind}"] = state.pop(f"{old}mlp.fc1.{kind}")
            legacy[f"{new}mlp.fc2.{kind}"] = state.pop(f"{old}mlp.fc2.{kind}")
        legacy[f"{new}mixer.rotary_emb.inv_freq"] = torch.ones(4)  # present in some files; must be dropped
    for kind in ("weight", "bias"):
        legacy[f"lm_head.ln.{kind}"] = state.pop(f"model.final_layernorm.{kind}")
        legacy[f"lm_head.linear.{kind}"] = state.pop(f"lm_head.{kind}")
    assert not state
    directory.mkdir()
    save_file(legacy, directory / "model.safetensors")
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    config = {
        "model_type": "phi-msft", "n_embd": cfg.hidden_size, "n_layer": cfg.num_hidden_layers,
        "n_head": cfg.num_attention_heads, "n_head_kv": None, "n_inner": None, "n_positions": 2048,
        "rotary_dim": int(head_dim * cfg.rope_parameters["partial_rotary_factor"]),
        "layer_norm_epsilon": cfg.layer_norm_eps, "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size, "resid_pdrop": 0.1, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "flash_attn": False, "flash_rotary": False, "fused_dense": False, "torch_dtype": "float32",
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))


def test_legacy_phi_msft_layout_gives_same_logits(saved_hf, tmp_path):
    hf, native_dir = saved_hf("phi-2")
    legacy_dir = tmp_path / "legacy"
    _write_phi_msft(hf, legacy_dir)
    legacy = phi_models.from_pretrained(legacy_dir)
    native = phi_models.from_pretrained(native_dir)
    assert legacy.config.partial_rotary_factor == pytest.approx(0.4)
    assert torch.equal(_logits(legacy), _logits(native))
    with torch.no_grad():
        ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
        assert (_logits(legacy) - hf(ids).logits).abs().max().item() <= TOL


def test_legacy_mixformer_layout_gives_same_logits(saved_hf, tmp_path):
    hf, native_dir = saved_hf("phi-1_5")
    msft_dir = tmp_path / "msft"
    _write_phi_msft(hf, msft_dir)
    # MixFormerSequential: block 0 = embedding, blocks 1..L = layers, block L+1 = head.
    layers = hf.config.num_hidden_layers
    state = load_file(msft_dir / "model.safetensors")
    mixformer = {}
    for key, value in state.items():
        if key == "transformer.embd.wte.weight":
            mixformer["layers.0.wte.weight"] = value
        elif key.startswith("transformer.h."):
            index, rest = key[len("transformer.h.") :].split(".", 1)
            mixformer[f"layers.{int(index) + 1}.{rest}"] = value
        else:  # lm_head.ln.* / lm_head.linear.*
            mixformer[f"layers.{layers + 1}." + key[len("lm_head.") :]] = value
    mix_dir = tmp_path / "mixformer"
    mix_dir.mkdir()
    save_file(mixformer, mix_dir / "model.safetensors")
    config = json.loads((msft_dir / "config.json").read_text())
    config["model_type"] = "mixformer-sequential"
    (mix_dir / "config.json").write_text(json.dumps(config))
    assert torch.equal(_logits(phi_models.from_pretrained(mix_dir)), _logits(phi_models.from_pretrained(native_dir)))


def test_model_tree_has_hf_paths_and_fused_slices(saved_hf):
    _, directory = saved_hf("phi-2")
    model = phi_models.from_pretrained(directory)
    names = dict(model.named_modules())
    for path in ("model.embed_tokens", "model.layers.1.self_attn.dense", "model.layers.0.mlp.fc1",
                 "model.final_layernorm", "lm_head"):  # fmt: skip
        assert path in names
    assert names["model.layers.0.self_attn.qkv_proj"].lora_slices == {"q_proj": 80, "k_proj": 80, "v_proj": 80}
    assert model.lora_target_aliases == {"Wqkv": "qkv_proj", "out_proj": "dense"}
    assert not any(p.is_meta for p in model.parameters())
    assert not model.training


def test_tied_head_shares_embedding(saved_hf):
    _, directory = saved_hf("phi-4-mini")
    model = phi_models.from_pretrained(directory)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    qkv = model.model.layers[0].self_attn.qkv_proj
    assert qkv.lora_slices == {"q_proj": 96, "k_proj": 32, "v_proj": 32}
    assert model.model.layers[0].mlp.gate_up_proj.lora_slices == {"gate_proj": 384, "up_proj": 384}


def test_dtype_argument(saved_hf):
    _, directory = saved_hf("phi-3-mini-4k")
    model = phi_models.from_pretrained(directory, dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert _logits(model).dtype == torch.bfloat16


def test_cast_in_row_chunks_equals_a_whole_cast(saved_hf, monkeypatch):
    """A cast too big for one read goes in row chunks; the last chunk is short (a slice past the end fails)."""
    from phi_models import loading

    hf, directory = saved_hf("phi-2")
    whole = phi_models.from_pretrained(directory, dtype="bf16")
    monkeypatch.setattr(loading, "_CHUNK_BYTES", 7 * 4 * hf.config.hidden_size)  # 7 rows of most tensors
    chunked = phi_models.from_pretrained(directory, dtype="bf16")
    assert hf.config.vocab_size % 7 and hf.config.intermediate_size % 7  # a short last chunk
    for (name, a), (_, b) in zip(whole.state_dict().items(), chunked.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_hub_repo_from_offline_cache(saved_hf, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    hf, directory = saved_hf("phi-2", max_shard_size="100KB")
    cache = tmp_path / "hub-cache"
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someorg--tiny-phi"
    shutil.copytree(directory, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = phi_models.from_pretrained("someorg/tiny-phi")
    assert torch.equal(_logits(model), _logits(phi_models.from_pretrained(directory)))
    with pytest.raises(HubError, match="local directory"):
        phi_models.from_pretrained("someorg/not-cached")


# ---- errors -------------------------------------------------------------------------------


def test_unknown_preset_lists_presets():
    with pytest.raises(PhiModelError, match="unknown model 'phi-7'") as info:
        phi_models.from_pretrained("phi-7")
    message = str(info.value)
    assert "\n" not in message
    for name in (
        "tiny",
        "phi-1_5",
        "phi-1.5",
        "phi-2",
        "phi-3-mini-4k",
        "phi-3-mini-128k",
        "phi-3.5-mini",
        "phi-4-mini",
    ):
        assert name in message


def test_missing_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhiModelError, match="config.json"):
        phi_models.from_pretrained(tmp_path / "empty")


def test_missing_directory(tmp_path):
    with pytest.raises(PhiModelError, match="no such model directory"):
        phi_models.from_pretrained(str(tmp_path / "nope"))


def test_missing_shard(saved_hf):
    _, directory = saved_hf("phi-2", max_shard_size="100KB")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (directory / victim).unlink()
    with pytest.raises(PhiModelError, match=f"shard '{victim}'.*missing"):
        phi_models.from_pretrained(directory)


def test_missing_tensor(saved_hf):
    _, directory = saved_hf("phi-1_5")
    state = load_file(directory / "model.safetensors")
    del state["model.layers.1.self_attn.k_proj.bias"]
    save_file(state, directory / "model.safetensors")
    with pytest.raises(PhiModelError, match="missing tensors: model.layers.1.self_attn.qkv_proj.bias"):
        phi_models.from_pretrained(directory)


def test_shape_mismatch_names_key_and_shapes(saved_hf):
    _, directory = saved_hf("phi-3-mini-4k")
    state = load_file(directory / "model.safetensors")
    state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(64, 100)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(
        PhiModelError, match=r"'model.layers.0.mlp.down_proj.weight' has shape \[64, 100\].*\[64, 256\]"
    ):
        phi_models.from_pretrained(directory)


def test_unknown_model_type(saved_hf):
    _, directory = saved_hf("phi-1_5")
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "llama"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(PhiModelError, match="unknown model_type 'llama'"):
        phi_models.from_pretrained(directory)


def test_no_network_hub_error_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="pass --model a local directory"):
        phi_models.from_pretrained("phi-2")


def test_bad_quantize_and_dtype_values():
    with pytest.raises(PhiModelError, match="quantize='int3'"):
        phi_models.from_pretrained("tiny", quantize="int3")
    with pytest.raises(PhiModelError, match="unknown dtype 'float8'"):
        phi_models.from_pretrained("tiny", dtype="float8")


def test_parse_dtype_is_public_and_strict():
    parse = phi_models.parse_dtype
    assert [parse(n) for n in ("bf16", "bfloat16", "fp16", "half", "fp32", "float")] == [
        torch.bfloat16, torch.bfloat16, torch.float16, torch.float16, torch.float32, torch.float32,
    ]  # fmt: skip
    assert parse(torch.float16) is torch.float16
    assert parse("auto", torch.bfloat16) is torch.bfloat16 and parse(None) is None
    with pytest.raises(PhiModelError, match=r"dtype torch.int8 is not supported; use float32, bfloat16 or float16"):
        parse(torch.int8)
    with pytest.raises(PhiModelError, match=r"unknown dtype '16'; use one of \[.*'bf16'.*\] or 'auto'"):
        parse(16)


def test_4bit_from_fused_and_split_layouts_agree(saved_hf, tmp_path):
    # Legacy Wqkv streams whole into the quantizer, HF q/k/v are joined from pieces: same bytes.
    # The widths (80, 240, 320) are not multiples of bitsandbytes' CPU packing blocks, so this
    # also covers 4-bit inference on such shapes.
    hf, native_dir = saved_hf("phi-2")
    _write_phi_msft(hf, tmp_path / "legacy")
    legacy = phi_models.from_pretrained(tmp_path / "legacy", quantize="nf4")
    native = phi_models.from_pretrained(native_dir, quantize="nf4")
    assert torch.equal(_logits(legacy), _logits(native))


def test_unreachable_hub_is_tried_once_then_cache_only(tmp_path, monkeypatch):
    """huggingface_hub retries a dead connection for ~25 s per file: one failure must be enough."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    import phi_models.hub as hub

    calls = []

    def unreachable(repo_id, filename, **kwargs):
        calls.append(kwargs["local_files_only"])
        raise LocalEntryNotFoundError("connection error and no cached copy")

    monkeypatch.setattr(hub, "hf_hub_download", unreachable)
    monkeypatch.setattr(hub, "_hub_unreachable_until", float("-inf"))
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # the host answers, the download still fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubError, match="the hub could not be reached"):
        phi_models.load_tokenizer("phi-2")
    with pytest.raises(HubError, match="the hub could not be reached"):
        phi_models.from_pretrained("phi-2")
    assert calls[0] is False and all(calls[1:]) and len(calls) >= 2


def test_unreachable_hub_window_expires(monkeypatch):
    """One transient failure must not leave the process cache-only for good."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    import phi_models.hub as hub

    now, calls = [1000.0], []

    def unreachable(repo_id, filename, **kwargs):
        calls.append(kwargs["local_files_only"])
        raise LocalEntryNotFoundError("connection error and no cached copy")

    monkeypatch.setattr(hub, "hf_hub_download", unreachable)
    monkeypatch.setattr(hub, "_clock", lambda: now[0])
    monkeypatch.setattr(hub, "_hub_unreachable_until", float("-inf"))
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fetch_at(t):
        now[0] = t
        assert hub.fetch_file("some/repo", "config.json", required=False) is None
        return calls[-1]

    assert fetch_at(1000.0) is False  # tries the hub, fails
    assert fetch_at(1000.0 + hub.UNREACHABLE_FOR - 1) is True  # cache only inside the window
    # That cache-only miss did not extend the window: once it is over, the hub is tried again.
    assert fetch_at(1000.0 + hub.UNREACHABLE_FOR + 1) is False
    assert fetch_at(1000.0 + hub.UNREACHABLE_FOR + 2) is True  # and the new failure opens a new one


def test_sliding_window_mode_override_is_validated_like_the_config():
    assert phi_models.from_pretrained("tiny", sliding_window_mode="w").config.sliding_window_mode == "w"
    with pytest.raises(PhiModelError, match="sliding_window_mode 'both' must be one of"):
        phi_models.from_pretrained("tiny", sliding_window_mode="both")
