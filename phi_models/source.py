"""Where a model lives: the tiny preset, a local directory, or a hub repository (via hub.fetch_file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_models.config import PhiConfig
from phi_models.errors import PhiModelError
from phi_models.hub import fetch_file
from phi_models.presets import PRESETS, TINY, canonical_preset, tiny_config, unknown_preset_error


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``name_or_path``: ``kind`` is "tiny", "dir" or "hub"."""

    kind: str
    name: str
    preset: str | None = None
    directory: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    def file(self, filename: str, required: bool = True) -> Path | None:
        """Local path of one of the model's files; None for a missing optional file."""
        if self.kind == "dir":
            path = self.directory / filename
            if path.is_file():
                return path
            if path.is_dir():
                raise PhiModelError(f"{path}: is a directory where the model's file {filename} is expected")
            if required:
                raise PhiModelError(f"{path}: file not found in model directory {self.directory}")
            return None
        if self.kind == "hub":
            return fetch_file(self.repo_id, filename, revision=self.revision, required=required)
        raise PhiModelError(f"the '{TINY}' preset has no file '{filename}'")

    def config(self) -> PhiConfig:
        """The model's architecture from its config.json (the tiny preset's own), without reading any weight."""
        return tiny_config() if self.kind == "tiny" else PhiConfig.from_file(self.file("config.json"))


def resolve_source(name_or_path: str | Path, revision: str | None = None) -> ModelSource:
    """Decide what ``name_or_path`` refers to; raise a one-line error if it is nothing usable."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource("dir", text, directory=path)
    preset = canonical_preset(text)
    if preset == TINY:
        return ModelSource("tiny", text, preset=TINY)
    if preset is not None:
        return ModelSource("hub", text, preset=preset, repo_id=PRESETS[preset], revision=revision)
    looks_like_path = isinstance(name_or_path, Path) or text.startswith((".", "/", "~")) or "\\" in text
    if not looks_like_path and text.count("/") == 1 and all(text.split("/")):
        return ModelSource("hub", text, repo_id=text, revision=revision)
    if looks_like_path or "/" in text:
        raise PhiModelError(f"{text}: no such model directory (expected a directory holding config.json)")
    raise unknown_preset_error(text)
