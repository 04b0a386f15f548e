"""Training checkpoints: the adapter plus everything needed to continue a run bit for bit.

Layout of ``<output_dir>/checkpoints/step-000120/``:
  ``adapter.safetensors``  what ``lora_core.lora_state_dict`` holds (loadable with strict=False)
  ``training_state.pt``    optimizer, schedule, grad scaler, all RNG states, step, epoch, batch index

A checkpoint is written into a hidden temporary directory (``.tmp-step-*``), fsynced and renamed
into place, so a directory named ``step-*`` is always complete, whatever killed the process. Saving
a step that already exists moves the old directory aside (``.old-step-*``) first and deletes it only
after the new one is in place; leftovers of a killed save are cleaned up (an aside directory whose
step is missing is renamed back) by the next save or ``--resume``. The newest ``keep_last`` survive.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_core import fsync_dir
from philora.training.errors import TrainingError
from philora.training.oserrors import disk_full_is_oserror
from philora.training.validate_state import check_payload

ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "training_state.pt"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
_LEFTOVER_DIR = re.compile(r"^\.(tmp|old)-(step-\d+)-\d+$")  # .tmp-step-000120-<pid>, .old-step-000120-<pid>


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
        match = _STEP_DIR.match(child.name)  # hidden .tmp-/.old- leftovers never match
        if match and _is_complete(child):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def _is_complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / ADAPTER_FILE).is_file()


def clean_leftovers(output_dir: str | os.PathLike) -> None:
    """Undo what a killed save left behind.

    ``.tmp-step-*`` (a checkpoint still being written) is deleted. ``.old-step-N-*`` (a previous
    ``step-N`` moved aside for a re-save) is renamed back when ``step-N`` is missing (the kill came
    between the two renames) and deleted otherwise.
    """
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        match = _LEFTOVER_DIR.match(child.name)
        if not match:
            continue
        final = root / match.group(2)
        if match.group(1) == "old" and not final.exists() and _is_complete(child):
            os.replace(child, final)
        else:
            shutil.rmtree(child, ignore_errors=True)
    fsync_dir(root)


def save_checkpoint(
    output_dir: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer,
    schedule,
    scaler,
    state: TrainingState,
    rng: dict,
    adapter_config: dict,
    keep_last: int,
    run_config: dict | None = None,
) -> Path:
    """Write checkpoint ``step-<state.step>`` atomically, then prune to the newest ``keep_last``.

    ``run_config`` (the options a resume must repeat, see ``training.run``) is stored in the state.
    """
    from lora_core import atomic_write, save_adapter

    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    clean_leftovers(output_dir)
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-step-{state.step:06d}-{os.getpid()}"
    aside = root / f".old-step-{state.step:06d}-{os.getpid()}"
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
        "run_config": dict(run_config) if run_config is not None else None,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
    }
    try:
        with disk_full_is_oserror(tmp / ADAPTER_FILE):
            save_adapter(model, tmp / ADAPTER_FILE, config=adapter_config)  # each file fsynced by atomic_write
        # Serialized in memory, written as plain bytes: a full disk is then an OSError, not torch's opaque one.
        state_bytes = io.BytesIO()
        torch.save(payload, state_bytes)
        atomic_write(tmp / STATE_FILE, lambda path: Path(path).write_bytes(state_bytes.getbuffer()))
        fsync_dir(tmp)
        # The same step saved again (e.g. interrupted right after a save): never delete the old copy
        # before the new one is in place, or a kill in between would leave no checkpoint of this step.
        if final.exists():
            os.replace(final, aside)
        os.replace(tmp, final)
        fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            if aside.exists() and not final.exists():
                os.replace(aside, final)  # the new copy failed: put the old one back
    shutil.rmtree(aside, ignore_errors=True)
    prune_checkpoints(output_dir, keep_last)
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints."""
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(checkpoint_root(output_dir))


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """``'latest'`` -> newest complete checkpoint of ``output_dir``; a path -> that checkpoint."""
    if resume == "latest":
        clean_leftovers(output_dir)  # a save killed between its renames may have left step-N aside
        found = list_checkpoints(output_dir)
        if not found:
            raise TrainingError(
                f"--resume latest: no complete checkpoint in {checkpoint_root(output_dir)} (the run "
                f"stopped before its first save, so there is nothing to resume); start it afresh "
                f"with --overwrite instead of --resume"
            )
        return found[-1]
    path = Path(resume)
    if not _is_complete(path):
        raise TrainingError(
            f"--resume {resume}: not a checkpoint directory (expected {STATE_FILE} and {ADAPTER_FILE} in it); "
            f"use 'latest' or a {CHECKPOINT_DIR}/step-NNNNNN folder"
        )
    return path


def load_training_state(path: str | os.PathLike) -> dict:
    """Read ``training_state.pt`` of checkpoint directory ``path`` (tensors only: weights_only=True)."""
    file = Path(path) / STATE_FILE
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise TrainingError(
            f"{file}: cannot be read as a training state ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0][:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainingError(f"{file}: not a philora training state (format {STATE_FORMAT} expected)")
    check_payload(payload, file)  # counters and parts; check_against_run checks the rest against the run
    return payload


def state_from_payload(payload: dict) -> TrainingState:
    """The counters of a loaded training state."""
    return TrainingState(
        step=payload["step"],
        epoch=payload["epoch"],
        batch_index=payload["batch_index"],
        tokens_seen=payload["tokens_seen"],
        elapsed=payload["elapsed"],
        best_eval_loss=payload["best_eval_loss"],
        extra=payload.get("extra", {}),
    )
