"""Atomic file writes: write to a temporary file beside the target, then rename over it."""
import os
import tempfile
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write_fn: Callable[[str], None]) -> None:
    """Write `path` atomically: `write_fn(tmp_path)` writes a temporary file in the same
    folder, which then replaces `path` in one rename. Readers never see a partial file;
    on any error the temporary file is removed and `path` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp_path)
        # Flush to disk before the rename so a crash cannot leave a renamed but empty file.
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
