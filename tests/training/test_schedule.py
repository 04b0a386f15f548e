"""LR schedules: warmup shape, end points, and state round trip."""

import math

import pytest
import torch

from philora.training.schedule import LRSchedule, warmup_steps_for


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_warmup_steps_for():
    assert warmup_steps_for(10, 1000) == 10
    assert warmup_steps_for(0.03, 1000) == 30
    assert warmup_steps_for(0, 1000) == 0


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_rises_to_peak(kind):
    sched = LRSchedule(_opt(), kind=kind, peak_lr=1e-3, total_steps=100, warmup_steps=4)
    rates = [sched.lr_at(i) for i in range(5)]
    assert rates == sorted(rates) and rates[0] == pytest.approx(2e-4) and rates[4] == pytest.approx(1e-3)


def test_cosine_and_linear_shapes():
    cos = LRSchedule(_opt(), kind="cosine", peak_lr=1.0, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert cos.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos.lr_at(110) == pytest.approx(0.1)
    lin = LRSchedule(_opt(), kind="linear", peak_lr=1.0, total_steps=110, warmup_steps=10)
    assert lin.lr_at(35) == pytest.approx(0.75) and lin.lr_at(110) == pytest.approx(0.0)
    const = LRSchedule(_opt(), kind="constant", peak_lr=0.5, total_steps=10)
    assert all(const.lr_at(i) == 0.5 for i in range(20))


def test_step_sets_optimizer_lr_and_state_round_trip():
    opt = _opt()
    sched = LRSchedule(opt, kind="cosine", peak_lr=1.0, total_steps=20, warmup_steps=2)
    for _ in range(7):
        sched.step()
    assert opt.param_groups[0]["lr"] == sched.lr_at(7)
    other_opt = _opt()
    other = LRSchedule(other_opt, kind="linear", peak_lr=5.0, total_steps=3)
    other.load_state_dict(sched.state_dict())
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    other.step(), sched.step()
    assert other.get_last_lr() == sched.get_last_lr() and not math.isnan(sched.get_last_lr())
