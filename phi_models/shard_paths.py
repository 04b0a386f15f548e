"""Shard file names from a model index stay inside the model: no absolute paths, no ``..``.

The check is on the name, not on where symlinks lead: a Hugging Face cache snapshot (a valid local model
directory) links every file into the cache's blob store outside the snapshot folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from phi_models.errors import PhiModelError


def check_shard_name(filename: str, index: Path) -> None:
    """Refuse an index entry that is not a plain relative ``*.safetensors`` name below the model directory."""
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    if (
        not filename
        or filename.startswith(("/", "\\"))
        or (len(filename) > 1 and filename[1] == ":")
        or ".." in parts
        or "\x00" in filename
        or not filename.endswith(".safetensors")
    ):
        raise PhiModelError(
            f"{index}: shard {filename!r:.120} is not a .safetensors file inside the model "
            f"directory; shard names must be relative paths without '..'"
        )
