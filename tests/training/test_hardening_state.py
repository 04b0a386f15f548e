"""A crafted or damaged training_state.pt / metrics.jsonl never reaches torch: every field is checked
against the run first, and a bad one is a one-line error (exit 2), never a native crash."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from philora.training.checkpoint import STATE_FILE, list_checkpoints, load_training_state
from philora.training.errors import TrainingError
from philora.training.run import main
from philora.training.validate_state import check_against_run, check_payload

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "12",
    "--max-seq-len",
    "48",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
    "--val-fraction",
    "0",
    "--log-every",
    "1",
    "--lora-r",
    "2",
    "--targets",
    "q_proj,v_proj",
    "--pad-multiple",
    "16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step run with a checkpoint at each step."""
    out = tmp_path_factory.mktemp("state") / "run"
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "2", "--save-every", "1"]) == 0
    return out


def _resume(tmp_path, trained, mutate, capsys) -> tuple[int, str]:
    """Copy the run, apply ``mutate`` to its latest training state, resume; return (exit code, stderr)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    latest = list_checkpoints(out)[-1]
    payload = torch.load(latest / STATE_FILE, weights_only=True)
    mutate(payload)
    torch.save(payload, latest / STATE_FILE)
    capsys.readouterr()
    code = main([*ARGS, "--output-dir", str(out), "--max-steps", "3", "--resume", "latest"])
    return code, capsys.readouterr().err


_RAW_TORCH = textwrap.dedent("""
    import torch
    import sys
    state = torch.load(sys.argv[1], weights_only=True)
    param = torch.nn.Parameter(torch.zeros(*map(int, sys.argv[2:])))  # the shape of the run's first LoRA factor
    optimizer = torch.optim.AdamW([param], lr=1e-3, fused=True)
    optimizer.load_state_dict({"state": {0: state["optimizer"]["state"][0]},
                               "param_groups": [dict(state["optimizer"]["param_groups"][0], params=[0])]})
    for _ in range(3):
        param.grad = torch.ones_like(param)
        optimizer.step()
    print("accepted", tuple(optimizer.state[param]["exp_avg"].shape))
""")


def test_wrong_shaped_moments_crash_fused_adamw_but_resume_refuses_them(tmp_path, trained, capsys):
    def shrink(payload):
        payload["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2)
        payload["optimizer"]["state"][0]["exp_avg_sq"] = torch.zeros(2)

    # First the failure: torch's fused AdamW takes the crafted moments and writes out of bounds.
    crafted = tmp_path / "crafted.pt"
    payload = torch.load(list_checkpoints(trained)[-1] / STATE_FILE, weights_only=True)
    shape = [str(n) for n in payload["optimizer"]["state"][0]["exp_avg"].shape]
    shrink(payload)
    torch.save(payload, crafted)
    raw = subprocess.run(
        [sys.executable, "-c", _RAW_TORCH, str(crafted), *shape], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert raw.returncode < 0 or "accepted (2,)" in raw.stdout, (raw.returncode, raw.stdout, raw.stderr[-500:])

    # Then philora: refused before the optimizer sees it.
    code, err = _resume(tmp_path, trained, shrink, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "optimizer.state[0]" in err and "shape [2]" in err


@pytest.fixture(scope="module")
def run_parts(trained):
    """The run's own optimizer (same LoRA parameters as the checkpoint) and a valid payload."""
    import lora_core
    import phi_models
    from philora.training.optim import build_optimizer

    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets=["q_proj", "v_proj"], r=2, lora_alpha=16.0, lora_dropout=0.05)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    file = list_checkpoints(trained)[-1] / STATE_FILE
    return optimizer, load_training_state(file.parent), file


def _set(path: str, value):
    def mutate(payload):
        *parents, last = path.split("/")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _del(key: str):
    return lambda payload: payload.pop(key)


STATES = {
    "step-negative": (_set("step", -1), "field step"),
    "step-a-string": (_set("step", "2"), "field step"),
    "step-float": (_set("step", 2.5), "field step"),
    "epoch-beyond-steps": (_set("epoch", 50), "field epoch"),
    "batch-index-beyond-epoch": (_set("batch_index", 10**9), "field batch_index"),
    "elapsed-nan": (_set("elapsed", float("nan")), "field elapsed"),
    "best-loss-inf": (_set("best_eval_loss", float("inf")), "field best_eval_loss"),
    "optimizer-missing": (_del("optimizer"), "field optimizer"),
    "optimizer-state-not-a-dict": (_set("optimizer/state", [1, 2]), "field optimizer.state"),
    "moments-nan": (lambda p: p["optimizer"]["state"][0]["exp_avg"].fill_(float("nan")), "NaN"),
    "moments-float64": (
        lambda p: p["optimizer"]["state"][0].update(exp_avg_sq=p["optimizer"]["state"][0]["exp_avg_sq"].double()),
        "torch.float64",
    ),
    "moments-missing": (lambda p: p["optimizer"]["state"][0].pop("exp_avg_sq"), "fields"),
    "adam-step-negative": (lambda p: p["optimizer"]["state"][0]["step"].fill_(-5), "negative"),
    "unknown-parameter": (lambda p: p["optimizer"]["state"].update({99: p["optimizer"]["state"][0]}), "99"),
    "two-param-groups": (
        lambda p: p["optimizer"]["param_groups"].append(p["optimizer"]["param_groups"][0]),
        "param_groups",
    ),
    "eps-zero-in-group": (lambda p: p["optimizer"]["param_groups"][0].update(eps=0.0), ".eps"),
    "group-params-other": (lambda p: p["optimizer"]["param_groups"][0].update(params=[0]), ".params"),
    "schedule-kind": (_set("schedule/kind", "bogus"), "schedule.kind"),
    "schedule-step-mismatch": (_set("schedule/last_step", 7), "schedule.last_step"),
    "schedule-total-zero": (_set("schedule/total_steps", 0), "schedule.total_steps"),
    "scaler-scale-zero": (
        _set(
            "scaler",
            {"scale": 0.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0},
        ),
        "scaler.scale",
    ),
    "rng-torch-short": (_set("rng/torch", torch.zeros(10, dtype=torch.uint8)), "rng.torch"),
    "rng-torch-int64": (lambda p: p["rng"].update(torch=p["rng"]["torch"].long()), "rng.torch"),
    "rng-python-short": (lambda p: p["rng"].update(python=(3, (1, 2, 3), None)), "rng.python"),
    "rng-python-word-too-big": (lambda p: p["rng"].update(python=(3, (2**40,) * 625, None)), "rng.python"),
    "rng-numpy-keys-negative": (lambda p: p["rng"]["numpy"]["keys"].fill_(-1), "rng.numpy.keys"),
    "rng-numpy-pos": (_set("rng/numpy/pos", 10_000), "rng.numpy.pos"),
    "rng-cuda-not-a-list": (_set("rng/cuda", "x"), "rng.cuda"),
}


@pytest.mark.parametrize("case", sorted(STATES), ids=sorted(STATES))
def test_malformed_training_state_is_refused_before_use(run_parts, case):
    optimizer, payload, file = run_parts
    mutate, words = STATES[case]
    bad = copy.deepcopy(payload)
    mutate(bad)
    scaler = object() if case.startswith("scaler") else None  # a run with a grad scaler (fp16) checks it
    with pytest.raises(TrainingError) as err:
        check_payload(bad, file)
        check_against_run(bad, file, optimizer=optimizer, scaler=scaler, batches_in_epoch=3)
    assert str(file) in str(err.value) and words in str(err.value), str(err.value)


def test_valid_training_state_passes_the_checks(run_parts):
    optimizer, payload, file = run_parts
    check_payload(payload, file)
    check_against_run(payload, file, optimizer=optimizer, scaler=None, batches_in_epoch=3)


STATE_FILES = {
    "not-a-torch-file": b"hello, not a zip",
    "empty": b"",
    "truncated": None,  # the first half of the real file
}


@pytest.mark.parametrize("case", sorted(STATE_FILES), ids=sorted(STATE_FILES))
def test_damaged_training_state_file(tmp_path, trained, case):
    import shutil

    folder = tmp_path / "step-000002"
    shutil.copytree(list_checkpoints(trained)[-1], folder)
    real = (folder / STATE_FILE).read_bytes()
    (folder / STATE_FILE).write_bytes(STATE_FILES[case] if STATE_FILES[case] is not None else real[: len(real) // 2])
    with pytest.raises(TrainingError, match="cannot be read as a training state"):
        load_training_state(folder)


def test_pickled_object_in_training_state_is_not_executed(tmp_path, trained):
    import shutil

    folder = tmp_path / "step-000002"
    shutil.copytree(list_checkpoints(trained)[-1], folder)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": 1, "evil": Evil()}, folder / STATE_FILE)
    with pytest.raises(TrainingError, match="cannot be read"):
        load_training_state(folder)
    assert not marker.exists()


def test_malformed_metrics_lines_are_dropped_on_resume(tmp_path, trained, capsys):
    import json
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    metrics = out / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(
        good
        + b'\xff\xfe{"step": 1}\n[1, 2]\n{"step": "x"}\n'
        + b"[" * 50_000
        + b"\n"
        + b'{"kind": "train", "step": 99}\n'
    )
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "3", "--resume", "latest"]) == 0
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
