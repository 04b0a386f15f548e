"""Numerical parity with transformers 5.23 for models shaped like each Phi variant (fp32, random weights)."""

from __future__ import annotations

import pytest
import torch

import phi_models
from tests.phi_models.conftest import ORIGINAL_MAX, SHAPES, VOCAB

TOL = 1e-4  # required bound; observed differences are ~1e-6


def _ours(directory, **kwargs):
    return phi_models.from_pretrained(directory, dtype="float32", sliding_window_mode="w", **kwargs)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_match_transformers(saved_hf, shape):
    sharded = shape == "phi-2"
    hf, directory = saved_hf(shape, max_shard_size="100KB" if sharded else None)
    if sharded:
        assert (directory / "model.safetensors.index.json").is_file()
    model = _ours(directory)
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        out = model(ids)
    assert out.shape == (2, 24, VOCAB)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("shape", ["phi-2", "phi-4-mini"])
def test_padded_batch_matches_transformers(saved_hf, shape):
    hf, directory = saved_hf(shape)
    model = _ours(directory)
    ids = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, 9:] = 0  # right padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=positions).logits
        out = model(ids, attention_mask=mask)  # positions derived from the mask by default
    real = mask.bool()
    assert (out[real] - ref[real]).abs().max().item() <= TOL
    assert torch.isfinite(out).all()  # padding rows too


@pytest.mark.parametrize("shape", ["phi-3-mini-128k", "phi-4-mini"])
@pytest.mark.parametrize("length", [ORIGINAL_MAX, ORIGINAL_MAX + 6])
def test_longrope_both_sides_of_original_max(saved_hf, shape, length):
    hf, directory = saved_hf(shape)
    model = _ours(directory)
    ids = torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(ids).logits
        out = model(ids)
    assert (out - ref).abs().max().item() <= TOL


def test_sliding_window_longer_than_window(saved_hf):
    hf, directory = saved_hf("phi-3-mini-4k")
    window = hf.config.sliding_window
    ids = torch.randint(0, VOCAB, (2, 4 * window), generator=torch.Generator().manual_seed(4))
    transformers_like = _ours(directory)
    with torch.no_grad():
        ref = hf(ids).logits
        out = transformers_like(ids)
        wider = phi_models.from_pretrained(directory, dtype="float32")(ids)  # default 'w+1' window
    assert (out - ref).abs().max().item() <= TOL
    # The two window definitions agree inside the window and differ once T > window.
    assert (wider[:, :window] - ref[:, :window]).abs().max().item() <= TOL
    assert (wider[:, window + 1 :] - ref[:, window + 1 :]).abs().max().item() > 1e-3


def test_sliding_window_with_kv_cache(saved_hf):
    hf, directory = saved_hf("phi-3-mini-4k")
    model = _ours(directory)
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :5], kv_cache=cache)] + [model(ids[:, t : t + 1], kv_cache=cache) for t in range(5, 20)]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shape", ["phi-2", "phi-3-mini-4k"])
def test_greedy_generation_matches_transformers(saved_hf, shape):
    hf, directory = saved_hf(shape)
    model = _ours(directory)
    prompt = torch.randint(3, VOCAB, (1, 7), generator=torch.Generator().manual_seed(6))
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, 7:].tolist()
    ours = phi_models.generate(model, prompt[0].tolist(), max_new_tokens=32)[0]
    assert len(ref) == 32
    assert ours == ref
