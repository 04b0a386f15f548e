"""Checkpoint files: atomic step directories, keep-last pruning, resume resolution and weights_only loading."""

import pytest
import torch

import lora_core
from training.checkpoint import (TrainingState, list_checkpoints, load_training_state, resolve_resume,
                                 save_checkpoint, state_from_payload)
from training.errors import TrainingError
from training.rng import rng_state
from training.schedule import LRSchedule


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
        save_checkpoint(tmp_path, model=model, optimizer=opt, schedule=sched, scaler=None,
                        state=TrainingState(step=step, epoch=1, batch_index=step * 2, tokens_seen=10 * step),
                        rng=rng_state(), adapter_config={"r": 2}, keep_last=2)
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
