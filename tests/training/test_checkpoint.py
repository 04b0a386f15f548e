"""Checkpoint files: atomic step directories, keep-last pruning, resume resolution and weights_only loading."""

import pytest
import torch

import lora_core
from philora.training.checkpoint import (
    TrainingState,
    list_checkpoints,
    load_training_state,
    resolve_resume,
    save_checkpoint,
    state_from_payload,
)
from philora.training.errors import TrainingError
from philora.training.rng import rng_state
from philora.training.schedule import LRSchedule


def _parts():
    model = torch.nn.Sequential(lora_core.Linear(8, 8, r=2, lora_alpha=4))
    lora_core.mark_only_lora_as_trainable(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    return model, opt, LRSchedule(opt, kind="cosine", peak_lr=1e-3, total_steps=10, warmup_steps=1)


def test_save_prune_and_reload(tmp_path):
    model, opt, sched = _parts()
    for step in range(1, 6):
        save_checkpoint(
            tmp_path,
            model=model,
            optimizer=opt,
            schedule=sched,
            scaler=None,
            state=TrainingState(step=step, epoch=1, batch_index=step * 2, tokens_seen=10 * step),
            rng=rng_state(),
            adapter_config={"r": 2},
            keep_last=2,
        )
    (tmp_path / "checkpoints" / ".tmp-step-000009-1").mkdir()  # debris of a killed save is never listed
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000005"]
    assert resolve_resume("latest", tmp_path).name == "step-000005"
    payload = load_training_state(resolve_resume("latest", tmp_path))
    state = state_from_payload(payload)
    assert (state.step, state.epoch, state.batch_index, state.tokens_seen) == (5, 1, 10, 50)
    other = torch.optim.AdamW([p for p in _parts()[0].parameters() if p.requires_grad], lr=1e-3)
    other.load_state_dict(payload["optimizer"])
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    tensors, config = lora_core.read_adapter(list_checkpoints(tmp_path)[-1] / "adapter.safetensors")
    assert set(tensors) == set(lora_core.lora_state_dict(model)) and config == {"r": 2}


def test_resume_errors(tmp_path):
    with pytest.raises(TrainingError, match="--resume latest: no complete checkpoint"):
        resolve_resume("latest", tmp_path)
    with pytest.raises(TrainingError, match="not a checkpoint directory"):
        resolve_resume(str(tmp_path), tmp_path)
    bad = tmp_path / "checkpoints" / "step-000001"
    bad.mkdir(parents=True)
    (bad / "training_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="cannot be read as a training state"):
        load_training_state(bad)


def _save(root, model, opt, sched, step, keep_last=3, **state):
    return save_checkpoint(
        root,
        model=model,
        optimizer=opt,
        schedule=sched,
        scaler=None,
        state=TrainingState(step=step, **state),
        rng=rng_state(),
        adapter_config={"r": 2},
        keep_last=keep_last,
    )


# A real SIGKILL in the middle of re-saving step 1: after the old step-000001 was moved aside,
# before the new one was renamed in. Nothing may be lost.
_KILLED_SAVE = """
import os, signal, sys, torch, lora_core
from philora.training.checkpoint import TrainingState, save_checkpoint
from philora.training.rng import rng_state
from philora.training.schedule import LRSchedule
model = torch.nn.Sequential(lora_core.Linear(8, 8, r=2, lora_alpha=4))
lora_core.mark_only_lora_as_trainable(model)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
sched = LRSchedule(opt, kind="constant", peak_lr=1e-3, total_steps=10)
def save(batch_index):
    save_checkpoint(sys.argv[1], model=model, optimizer=opt, schedule=sched, scaler=None, rng=rng_state(),
                    state=TrainingState(step=1, batch_index=batch_index), adapter_config={}, keep_last=1)
save(7)
real = os.replace
def replace_then_die(src, dst):
    real(src, dst)
    if os.path.basename(str(dst)).startswith(".old-"):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
save(8)
"""


def test_kill_between_renames_loses_nothing_and_leftovers_are_cleaned(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(tmp_path)], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    root = tmp_path / "checkpoints"
    leftovers = sorted(p.name.split("-")[0] for p in root.iterdir())
    assert leftovers == [".old", ".tmp"]  # old copy aside, complete new copy not yet renamed in
    assert list_checkpoints(tmp_path) == []  # hidden leftovers are never listed
    # --resume latest puts the old copy back (keep_last 1 would otherwise have left no checkpoint)
    restored = resolve_resume("latest", tmp_path)
    assert restored.name == "step-000001" and load_training_state(restored)["batch_index"] == 7
    assert [p.name for p in root.iterdir()] == ["step-000001"]


def test_resave_same_step_replaces_it_and_the_next_save_cleans_debris(tmp_path, monkeypatch):
    model, opt, sched = _parts()
    _save(tmp_path, model, opt, sched, 1, batch_index=7)
    _save(tmp_path, model, opt, sched, 1, batch_index=8)  # the same step again: replaced, no aside left
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-000001"]
    assert load_training_state(root / "step-000001")["batch_index"] == 8

    # a save that fails at the final rename keeps the old copy in place
    import philora.training.checkpoint as ckpt

    real = ckpt.os.replace

    def failing(src, dst):
        if str(src).split("/")[-1].startswith(".tmp-"):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, opt, sched, 1, batch_index=9)
    monkeypatch.setattr(ckpt.os, "replace", real)
    assert [p.name for p in root.iterdir()] == ["step-000001"]
    assert load_training_state(root / "step-000001")["batch_index"] == 8

    # debris of killed saves (another pid) is removed by the next save, aside copies of present steps too
    (root / ".tmp-step-000002-1").mkdir()
    (root / ".old-step-000001-1").mkdir()
    _save(tmp_path, model, opt, sched, 2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]
