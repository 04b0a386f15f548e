"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

import os
import tempfile
from collections.abc import Callable

PathLike = str | os.PathLike


def _umask() -> int:
    """The process umask. Linux exposes it read-only in /proc; elsewhere set-and-restore is the
    only way to read it (not thread-safe, hence the second choice)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder) -> None:
    """Flush a folder's entries (renames, new files) to disk, so a rename itself is durable.

    A no-op where folders cannot be opened for fsync (Windows).
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write_fn: Callable[[str], None]) -> None:
    """Write `path` atomically: `write_fn(tmp_path)` writes a temporary file in the same
    folder, which then replaces `path` in one rename. Readers never see a partial file;
    on any error the temporary file is removed and `path` is left as it was. The file gets
    the permissions a plain open() would give it (0o666 & ~umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp_path)
        # mkstemp creates 0o600, which would make adapters and configs private to their writer.
        os.chmod(tmp_path, 0o666 & ~_umask())
        # Flush to disk before the rename so a crash cannot leave a renamed but empty file.
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    fsync_dir(folder)
