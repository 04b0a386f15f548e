"""Operating-system failures (full disk, permissions, read-only media) as one line the user can act on."""

from __future__ import annotations

import contextlib
import errno
import os

_DISK_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the quota) is full; libraries that wrap I/O errors say it in text."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(err) for text in _DISK_FULL_TEXT)


@contextlib.contextmanager
def disk_full_is_oserror(path: str | os.PathLike):
    """Re-raise a library's wrapped "no space left" error (safetensors, torch) as ``OSError(ENOSPC, path)``."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        if is_disk_full(err):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path)) from None
        raise


def describe_os_error(err: OSError) -> str:
    """One line for an OSError that reached the command line: what failed, on which path, what to do."""
    where = err.filename if err.filename is not None else "a file"
    if is_disk_full(err):
        return (
            f"the disk is full (writing {where}): free some space or pick an --output-dir on another disk, "
            f"then --resume latest; complete checkpoints are left intact"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; make it readable/writable for this user or pick another path"
    if err.errno == errno.EROFS:
        return f"{where}: the file system is read-only; pick an --output-dir on a writable disk"
    if err.errno == errno.EISDIR:
        return f"{where}: is a directory where a file is expected; pass a file"
    if err.errno == errno.ENOTDIR:
        return f"{where}: a path component is not a directory"
    if err.errno == errno.ENOENT:
        return f"{where}: no such file or directory"
    return f"{where}: {err.strerror or type(err).__name__}"
