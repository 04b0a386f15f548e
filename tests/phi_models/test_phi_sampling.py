"""Sampling parameters: validation, repetition penalty, min-p, and the per-forward range check moved to the boundary."""

from __future__ import annotations

import math

import pytest
import torch

import phi_models
from phi_models import PhiModelError, SamplingParams
from phi_models.sampling import filter_logits, penalize_repeats


@pytest.fixture(scope="module")
def tiny():
    return phi_models.from_pretrained("tiny")


@pytest.mark.parametrize("bad", [
    dict(temperature=math.nan), dict(temperature=-0.1), dict(temperature=math.inf), dict(temperature="1"),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_p=math.nan), dict(top_k=-1), dict(top_k=2.5), dict(top_k=True),
    dict(min_p=-0.1), dict(min_p=1.1), dict(min_p=math.nan), dict(repetition_penalty=0.0),
    dict(repetition_penalty=math.nan),
])  # fmt: skip
def test_out_of_range_values_raise_the_package_error(tiny, bad):
    with pytest.raises(PhiModelError, match=next(iter(bad))):
        SamplingParams(**bad)
    with pytest.raises(PhiModelError, match=next(iter(bad))):
        phi_models.generate(tiny, [1, 2], max_new_tokens=2, **bad)


def test_bad_seed_tokens_and_lengths(tiny):
    with pytest.raises(PhiModelError, match="seed"):
        phi_models.generate(tiny, [1, 2], seed=1.5)
    with pytest.raises(PhiModelError, match="max_new_tokens"):
        phi_models.generate(tiny, [1, 2], max_new_tokens=-1)
    with pytest.raises(PhiModelError, match="token id 99999"):
        phi_models.generate(tiny, [1, 99999])


def test_repetition_penalty_follows_ctrl_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[True, True, False, False]])
    out = penalize_repeats(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_repetition_penalty_changes_greedy_output_away_from_repeats(tiny):
    prompt = [5, 6, 7, 5, 6, 7, 5, 6, 7]
    plain = phi_models.generate(tiny, prompt, max_new_tokens=20)[0]
    penalized = phi_models.generate(tiny, prompt, max_new_tokens=20, repetition_penalty=1e6)[0]
    # With a huge penalty no token seen before (prompt or output) is chosen again while unseen ones remain.
    assert len(set(penalized)) == len(penalized) and not set(penalized) & set(prompt)
    assert penalized != plain or len(set(plain)) == len(plain)


def test_min_p_keeps_tokens_above_fraction_of_top():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, None, None, 0.5).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.15 < 0.5 * 0.5
    assert filter_logits(logits, None, None, 0.0).isfinite().all()


def test_min_p_one_is_greedy_when_sampling(tiny):
    greedy = phi_models.generate(tiny, [1, 2, 3], max_new_tokens=10)
    assert phi_models.generate(tiny, [1, 2, 3], max_new_tokens=10, temperature=1.5, min_p=1.0, seed=1) == greedy


def test_decode_steps_skip_the_range_check_sync(tiny, monkeypatch):
    # The model checks ids with input_ids.max()/min() unless the cache says the owner checked them.
    calls = []
    original = torch.Tensor.max

    def counting_max(self, *args, **kwargs):
        if self.dtype == torch.long and self.dim() == 2 and not args and not kwargs:
            calls.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "max", counting_max)
    phi_models.generate(tiny, [1, 2, 3], max_new_tokens=8)
    assert calls == []
    tiny(torch.tensor([[1, 2, 3]]))
    assert calls == [(1, 3)]  # a direct call still checks
