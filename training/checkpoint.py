"""Training checkpoints: the adapter plus everything needed to continue a run bit for bit.

Layout of ``<output_dir>/checkpoints/step-000120/``:
  ``adapter.safetensors``  what ``lora_core.lora_state_dict`` holds (loadable with strict=False)
  ``training_state.pt``    optimizer, schedule, grad scaler, all RNG states, step, epoch, batch index

A checkpoint is written into a hidden temporary directory and renamed into place, so a directory
named ``step-*`` is always complete, whatever killed the process. The newest ``keep_last`` survive.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.errors import TrainingError

ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "training_state.pt"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingState:
    """Where the run stands: counters and the data position to continue from."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch the next micro-batch comes from
    batch_index: int = 0  # index of the next micro-batch within that epoch
    tokens_seen: int = 0  # target tokens trained on so far
    elapsed: float = 0.0  # training seconds before this process started
    best_eval_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    """The folder holding a run's ``step-*`` checkpoints."""
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file() and (child / ADAPTER_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def save_checkpoint(output_dir: str | os.PathLike, *, model: torch.nn.Module, optimizer, schedule, scaler,
                    state: TrainingState, rng: dict, adapter_config: dict, keep_last: int) -> Path:
    """Write checkpoint ``step-<state.step>`` atomically, then prune to the newest ``keep_last``."""
    from lora_core import atomic_write, save_adapter

    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-step-{state.step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    payload = {
        "format": STATE_FORMAT,
        "step": state.step,
        "epoch": state.epoch,
        "batch_index": state.batch_index,
        "tokens_seen": state.tokens_seen,
        "elapsed": state.elapsed,
        "best_eval_loss": state.best_eval_loss,
        "extra": state.extra,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
    }
    try:
        save_adapter(model, tmp / ADAPTER_FILE, config=adapter_config)
        atomic_write(tmp / STATE_FILE, lambda path: torch.save(payload, path))
        if final.exists():  # the same step saved again (e.g. interrupted right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(output_dir, keep_last)
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and any leftover temporary directories."""
    root = checkpoint_root(output_dir)
    for stale in root.glob(".tmp-step-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid != str(os.getpid()):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """``'latest'`` -> newest complete checkpoint of ``output_dir``; a path -> that checkpoint."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise TrainingError(f"--resume latest: no complete checkpoint in {checkpoint_root(output_dir)}; start without --resume")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file() or not (path / ADAPTER_FILE).is_file():
        raise TrainingError(f"--resume {resume}: not a checkpoint directory (expected {STATE_FILE} and {ADAPTER_FILE} in it); "
                            f"use 'latest' or a {CHECKPOINT_DIR}/step-NNNNNN folder")
    return path


def load_training_state(path: str | os.PathLike) -> dict:
    """Read ``training_state.pt`` of checkpoint directory ``path`` (tensors only: weights_only=True)."""
    file = Path(path) / STATE_FILE
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise TrainingError(f"{file}: cannot be read as a training state ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainingError(f"{file}: not a philora training state (format {STATE_FORMAT} expected)")
    return payload


def state_from_payload(payload: dict) -> TrainingState:
    """The counters of a loaded training state."""
    return TrainingState(step=payload["step"], epoch=payload["epoch"], batch_index=payload["batch_index"],
                         tokens_seen=payload["tokens_seen"], elapsed=payload["elapsed"],
                         best_eval_loss=payload["best_eval_loss"], extra=payload.get("extra", {}))
