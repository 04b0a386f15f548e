"""Check a loaded ``training_state.pt`` against the run before any of it is used.

``weights_only=True`` stops pickles, not wrong numbers: optimizer moments of the wrong shape make
the fused AdamW kernel write out of bounds (a native crash), a scale of 0 or an RNG state of the
wrong size fail deep inside torch. Every field is checked here: counters and data position, the
optimizer state (against the state the run's own optimizer creates for its own parameters), the
schedule, the grad scaler and every RNG state. Errors are one-line TrainingErrors naming the file
and the field.
"""

from __future__ import annotations

import inspect
import math
import random
from pathlib import Path

import torch

from philora.training.errors import TrainingError

_SCHEDULE_KINDS = ("cosine", "linear", "constant")
_MT_WORDS = 624  # Mersenne Twister state words (python and numpy)


class _Checker:
    def __init__(self, file: Path):
        self.file = file

    def fail(self, field: str, problem: str):
        raise TrainingError(
            f"{self.file}: field {field} {problem}; the checkpoint is damaged or not from this "
            f"run: resume from another checkpoint (--resume {self.file.parent.parent}/step-NNNNNN) "
            f"or start afresh"
        )

    def integer(self, field: str, value, low: int = 0, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, got {type(value).__name__}")
        if value < low or (high is not None and value > high):
            self.fail(field, f"is {value}, outside [{low}, {high if high is not None else 'inf'}]")
        return value

    def number(self, field: str, value, *, positive: bool = False, low: float | None = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, got {value!r:.60}")
        if positive and value <= 0:
            self.fail(field, f"must be > 0, got {value}")
        if low is not None and value < low:
            self.fail(field, f"must be >= {low}, got {value}")
        return float(value)

    def mapping(self, field: str, value) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"must be a mapping, got {type(value).__name__}")
        return value


def check_payload(payload: dict, file: Path) -> None:
    """Types and ranges of the counters and the presence of every part (run before anything else)."""
    check = _Checker(Path(file))
    for name in ("step", "epoch", "batch_index", "tokens_seen"):
        check.integer(name, payload.get(name))
    check.number("elapsed", payload.get("elapsed"))
    if payload.get("best_eval_loss") is not None:
        check.number("best_eval_loss", payload["best_eval_loss"])
    if payload["epoch"] > payload["step"]:
        check.fail("epoch", f"is {payload['epoch']} after only {payload['step']} steps")
    if payload.get("run_config") is not None:
        check.mapping("run_config", payload["run_config"])
    if not isinstance(payload.get("extra", {}), dict):
        check.fail("extra", "must be a mapping")
    optimizer = check.mapping("optimizer", payload.get("optimizer"))
    check.mapping("optimizer.state", optimizer.get("state"))
    if not isinstance(optimizer.get("param_groups"), list):
        check.fail("optimizer.param_groups", "must be a list")
    check.mapping("schedule", payload.get("schedule"))
    if payload.get("scaler") is not None:
        check.mapping("scaler", payload["scaler"])
    check.mapping("rng", payload.get("rng"))


def check_against_run(payload: dict, file: Path, *, optimizer, scaler, batches_in_epoch: int) -> None:
    """Everything the run will load from ``payload``, against the run's own optimizer, scaler and data."""
    check = _Checker(Path(file))
    if payload["batch_index"] > batches_in_epoch:
        check.fail(
            "batch_index", f"is {payload['batch_index']} but epoch {payload['epoch']} has {batches_in_epoch} batches"
        )
    _check_optimizer(check, payload["optimizer"], optimizer)
    _check_schedule(check, payload["schedule"], payload["step"])
    if scaler is not None and payload.get("scaler") is not None:
        _check_scaler(check, payload["scaler"])
    _check_rng(check, payload["rng"])


def reference_optimizer_state(optimizer) -> dict:
    """The state dict the run's optimizer has after one step: built on zero clones, the real weights untouched."""
    groups = []
    for group in optimizer.param_groups:
        clones = [torch.zeros_like(p, requires_grad=True) for p in group["params"]]
        for clone in clones:
            clone.grad = torch.zeros_like(clone)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": clones})
    accepted = inspect.signature(type(optimizer)).parameters
    twin = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
    twin.step()
    return twin.state_dict()


def _check_optimizer(check: _Checker, loaded: dict, optimizer) -> None:
    expected = reference_optimizer_state(optimizer)
    groups, want_groups = loaded["param_groups"], expected["param_groups"]
    if len(groups) != len(want_groups):
        check.fail("optimizer.param_groups", f"has {len(groups)} groups, this run's optimizer {len(want_groups)}")
    for index, (group, want) in enumerate(zip(groups, want_groups)):
        where = f"optimizer.param_groups[{index}]"
        check.mapping(where, group)
        if group.get("params") != want["params"]:
            check.fail(f"{where}.params", f"lists other parameters than this run's {len(want['params'])}")
        for key, value in want.items():
            if key in ("params", "lr", "initial_lr"):
                continue
            if key not in group:
                check.fail(f"{where}.{key}", "is missing")
            if _plain(group[key]) != _plain(value):
                check.fail(
                    f"{where}.{key}", f"is {_plain(group[key])!r:.60}, this run's optimizer has {_plain(value)!r:.60}"
                )
        if "lr" in group:
            check.number(f"{where}.lr", group["lr"])
    state, want_state = loaded["state"], expected["state"]
    if set(state) - set(want_state):
        check.fail(
            "optimizer.state",
            f"holds parameters {sorted(set(state) - set(want_state), key=str)[:5]} this run does not have",
        )
    for key, entry in state.items():
        where = f"optimizer.state[{key}]"
        entry, want = check.mapping(where, entry), want_state[key]
        if set(entry) != set(want):
            check.fail(where, f"has fields {sorted(entry)}, expected {sorted(want)}")
        for name, value in entry.items():
            _check_state_value(check, f"{where}.{name}", value, want[name])


def _check_state_value(check: _Checker, field: str, value, want) -> None:
    if isinstance(want, torch.Tensor):
        if not isinstance(value, torch.Tensor):
            check.fail(field, f"must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            check.fail(
                field,
                f"is a {value.dtype} tensor of shape {list(value.shape)}, expected {want.dtype} {list(want.shape)}",
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            check.fail(field, "holds NaN or infinite values")
        if field.endswith(".step") and value.numel() == 1 and float(value) < 0:
            check.fail(field, f"is negative ({float(value)})")
        return
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        check.number(field, value, low=None)
    elif type(value) is not type(want):
        check.fail(field, f"must be {type(want).__name__}, got {type(value).__name__}")
    elif isinstance(want, dict):  # nested state (bitsandbytes keeps its quantization state in one)
        if set(value) != set(want):
            check.fail(field, f"has fields {sorted(map(str, value))}, expected {sorted(map(str, want))}")
        for key in want:
            _check_state_value(check, f"{field}.{key}", value[key], want[key])
    elif isinstance(want, (tuple, list)):
        if len(value) != len(want):
            check.fail(field, f"has {len(value)} items, expected {len(want)}")
        for index, (item, want_item) in enumerate(zip(value, want)):
            _check_state_value(check, f"{field}[{index}]", item, want_item)


def _plain(value):
    return value.tolist() if isinstance(value, torch.Tensor) else list(value) if isinstance(value, tuple) else value


def _check_schedule(check: _Checker, schedule: dict, step: int) -> None:
    if schedule.get("kind") not in _SCHEDULE_KINDS:
        check.fail("schedule.kind", f"is {schedule.get('kind')!r:.40}, expected one of {', '.join(_SCHEDULE_KINDS)}")
    check.number("schedule.peak_lr", schedule.get("peak_lr"), positive=True)
    total = check.integer("schedule.total_steps", schedule.get("total_steps"), low=1)
    check.integer("schedule.warmup_steps", schedule.get("warmup_steps"), high=max(total, 0) + 10**9)
    ratio = check.number("schedule.min_lr_ratio", schedule.get("min_lr_ratio"))
    if ratio > 1:
        check.fail("schedule.min_lr_ratio", f"is {ratio}, outside [0, 1]")
    if check.integer("schedule.last_step", schedule.get("last_step")) != step:
        check.fail("schedule.last_step", f"is {schedule['last_step']} but the state is at step {step}")


def _check_scaler(check: _Checker, scaler: dict) -> None:
    check.number("scaler.scale", scaler.get("scale"), positive=True)
    check.number("scaler.growth_factor", scaler.get("growth_factor"), positive=True)
    check.number("scaler.backoff_factor", scaler.get("backoff_factor"), positive=True)
    check.integer("scaler.growth_interval", scaler.get("growth_interval"), low=1)
    check.integer("scaler._growth_tracker", scaler.get("_growth_tracker"))


def _check_rng(check: _Checker, rng: dict) -> None:
    python = rng.get("python")
    if not isinstance(python, (tuple, list)) or len(python) != 3:
        check.fail("rng.python", "must be (version, state words, gauss) as random.getstate() gives")
    version, words, gauss = python
    want_version = random.getstate()[0]
    if version != want_version:
        check.fail("rng.python", f"has version {version!r:.20}, this Python uses {want_version}")
    if (
        not isinstance(words, (tuple, list))
        or len(words) != _MT_WORDS + 1
        or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 2**32 for w in words[:-1])
        or not isinstance(words[-1], int)
        or not 0 <= words[-1] <= _MT_WORDS
    ):
        check.fail("rng.python", f"must hold {_MT_WORDS} 32-bit words and a position")
    if gauss is not None:
        check.number("rng.python gauss", gauss, low=None)
    numpy = check.mapping("rng.numpy", rng.get("numpy"))
    if numpy.get("kind") != "MT19937":
        check.fail("rng.numpy.kind", f"is {numpy.get('kind')!r:.20}, expected 'MT19937'")
    keys = numpy.get("keys")
    if (
        not isinstance(keys, torch.Tensor)
        or keys.dtype != torch.int64
        or tuple(keys.shape) != (_MT_WORDS,)
        or bool((keys < 0).any())
        or bool((keys >= 2**32).any())
    ):
        check.fail("rng.numpy.keys", f"must be {_MT_WORDS} int64 values in [0, 2**32)")
    check.integer("rng.numpy.pos", numpy.get("pos"), high=_MT_WORDS)
    check.integer("rng.numpy.has_gauss", numpy.get("has_gauss"), high=1)
    check.number("rng.numpy.cached_gaussian", numpy.get("cached_gaussian"), low=None)
    _check_generator_state(check, "rng.torch", rng.get("torch"), torch.get_rng_state())
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, list):
        check.fail("rng.cuda", "must be a list of CUDA generator states")
    if cuda and torch.cuda.is_available():
        for index, state in enumerate(cuda[: torch.cuda.device_count()]):
            _check_generator_state(check, f"rng.cuda[{index}]", state, torch.cuda.get_rng_state(index))


def _check_generator_state(check: _Checker, field: str, value, want: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or tuple(value.shape) != tuple(want.shape):
        check.fail(field, f"must be a uint8 tensor of shape {list(want.shape)}")
