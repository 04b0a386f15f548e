"""Guards on a run directory: one run at a time (a lock naming its holder), and ``--overwrite`` that
only ever removes what a philora run wrote (recognized by a marker file).

The lock is an ``flock`` on ``<output_dir>/.philora.lock``: the kernel drops it when the holding
process dies in any way (SIGKILL included), so a stale lock file never blocks a ``--resume``; the pid
written into the file is only there to name the holder in the error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path

from philora.training.errors import TrainingError

LOCK_FILE = ".philora.lock"
MARKER_FILE = ".philora-run"
_CHECKPOINT_ENTRY = re.compile(r"^(step-\d+|\.(tmp|old)-step-\d+-\d+)$")
_TENSORBOARD_ENTRY = re.compile(r"^events\.out\.tfevents\.")

_held: dict[str, int] = {}  # resolved run directory -> fd holding its lock (this process)


def acquire_run_lock(out: Path) -> None:
    """Take the exclusive lock on run directory ``out`` (created if needed), or raise naming the holder."""
    key = str(out.resolve())
    if key in _held:
        return
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise TrainingError(
            f"--output-dir {out}: cannot create the run lock {path} ({err.strerror}); "
            f"check the directory's permissions or pick another --output-dir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _read_holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise TrainingError(
                f"--output-dir {out} is in use by another run (pid {holder}); wait for it to end, "
                f"stop it, or pick another --output-dir"
            ) from None
        raise TrainingError(f"--output-dir {out}: cannot lock {path} ({err.strerror})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def release_run_locks() -> None:
    """Release every run lock this process holds (the lock file stays; it is harmless unlocked)."""
    while _held:
        _, fd = _held.popitem()
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def is_philora_run(out: Path) -> bool:
    """Whether ``out`` carries the marker a philora run writes into its directory."""
    return (out / MARKER_FILE).is_file()


def write_marker(out: Path) -> None:
    """Mark ``out`` as a philora run directory (so a later ``--overwrite`` may clear it)."""
    from lora_core import atomic_write

    if is_philora_run(out):
        return
    text = json.dumps({"written_by": "philora", "pid": os.getpid()}) + "\n"
    atomic_write(out / MARKER_FILE, lambda p: Path(p).write_text(text, encoding="utf-8"))


def clear_run(out: Path, run_files: tuple[str, ...], checkpoint_dir: str) -> None:
    """``--overwrite``: delete what a philora run wrote in ``out``; refuse a directory philora did not mark.

    Inside ``checkpoints/`` only ``step-*`` folders (and a killed save's hidden leftovers) go, inside
    ``tensorboard/`` only event files; anything else there is left, and the folder with it.
    """
    if not is_philora_run(out):
        found = sorted(name for name in (*run_files, checkpoint_dir, "tensorboard") if (out / name).exists())
        raise TrainingError(
            f"--overwrite: {out} holds {', '.join(found)} but no {MARKER_FILE} marker, so philora "
            f"did not write them; remove them yourself or pick another --output-dir"
        )
    for name in run_files:
        (out / name).unlink(missing_ok=True)
    _clear_folder(out / checkpoint_dir, _CHECKPOINT_ENTRY)
    _clear_folder(out / "tensorboard", _TENSORBOARD_ENTRY)


def _clear_folder(folder: Path, ours: re.Pattern) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in folder.iterdir():
        if not ours.match(child.name) or child.is_symlink():
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    try:
        folder.rmdir()  # only when nothing foreign is left in it
    except OSError:
        pass


def make_output_dir(out: Path) -> None:
    """Create the run directory and check that this user can write into it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"--output-dir {out}: cannot be created ({err.strerror}); pick a writable path") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TrainingError(f"--output-dir {out}: not writable by this user; pick a writable path")
