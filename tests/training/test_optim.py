"""Optimizer factory: torch fused AdamW and the bitsandbytes 8-bit/paged variants all step and round-trip state."""

import io

import pytest
import torch

from philora.training.errors import TrainingError
from philora.training.optim import build_optimizer


def _quadratic_steps(opt, param, steps=5):
    losses = []
    for _ in range(steps):
        loss = (param**2).sum()
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses


@pytest.mark.parametrize("name", ["adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit"])
def test_each_optimizer_descends_and_state_round_trips(name):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(128, 64))  # >= 4096 elements, so bnb really uses 8-bit state
    opt = build_optimizer([param], name=name, lr=1e-2)
    losses = _quadratic_steps(opt, param)
    assert losses[-1] < losses[0]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clone = torch.nn.Parameter(param.detach().clone())
    opt2 = build_optimizer([clone], name=name, lr=1e-2)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    _quadratic_steps(opt, param, 2)
    _quadratic_steps(opt2, clone, 2)
    torch.testing.assert_close(clone, param, rtol=0, atol=0)


def test_adamw_is_fused_on_cpu():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(3))], name="adamw", lr=1e-3)
    assert opt.defaults["fused"] is True


def test_frozen_params_are_skipped_and_none_is_an_error():
    frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    with pytest.raises(TrainingError, match="no trainable parameters"):
        build_optimizer([frozen], lr=1e-3)
