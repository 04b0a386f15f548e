"""Short model names: the official hub repositories, and the built-in ``tiny`` model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from phi_models.config import PhiConfig
from phi_models.errors import PhiModelError

TINY = "tiny"

PRESETS: dict[str, str] = {
    "phi-1_5": "microsoft/phi-1_5",
    "phi-2": "microsoft/phi-2",
    "phi-3-mini-4k": "microsoft/Phi-3-mini-4k-instruct",
    "phi-3-mini-128k": "microsoft/Phi-3-mini-128k-instruct",
    "phi-3.5-mini": "microsoft/Phi-3.5-mini-instruct",
    "phi-4-mini": "microsoft/Phi-4-mini-instruct",
    "phi-4": "microsoft/phi-4",
}
ALIASES: dict[str, str] = {"phi-1.5": "phi-1_5"}

# Chat format of each preset's tokenizer (None: a base model with no chat template).
PRESET_CHAT_FORMATS: dict[str, str | None] = {
    "phi-1_5": None,
    "phi-2": None,
    "phi-3-mini-4k": "phi3",
    "phi-3-mini-128k": "phi3",
    "phi-3.5-mini": "phi3.5",
    "phi-4-mini": "phi4-mini",
    "phi-4": "phi4",
}

TINY_SEED = 1234


def preset_names() -> list[str]:
    """Every accepted short name, ``tiny`` and aliases included."""
    return [TINY, *PRESETS, *ALIASES]


def canonical_preset(name: str) -> str | None:
    """The preset a short name refers to, or None if it is not one."""
    name = ALIASES.get(name, name)
    return name if name == TINY or name in PRESETS else None


def tiny_config() -> PhiConfig:
    """The ``tiny`` preset: phi-2 architecture at a few million parameters."""
    return PhiConfig(
        model_type="phi",
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=2048,
        resid_pdrop=0.0,
        hidden_act="gelu_new",
        torch_dtype="float32",
    )


def tiny_tokenizer_path(*, must_exist: bool = True) -> Path:
    """The ``tiny`` model's tokenizer.json, package data of phi_models (``phi_models/assets/tiny/``).

    Its folder holds nothing else, so it doubles as the tiny model's tokenizer folder. The file is
    written by ``python -m philora.data.samples.make_samples``, which passes ``must_exist=False``.
    """
    path = Path(str(resources.files("phi_models"))) / "assets" / "tiny" / "tokenizer.json"
    if must_exist and not path.is_file():
        raise PhiModelError(
            f"the tiny model's tokenizer {path} is missing; reinstall philora "
            "or pass a directory holding tokenizer.json"
        )
    return path


def unknown_preset_error(name: str) -> PhiModelError:
    """The error for a name that is neither a preset, a directory nor a hub id."""
    return PhiModelError(
        f"unknown model '{name}': use a preset ({', '.join(preset_names())}), "
        f"a hub repo id like 'microsoft/phi-2', or a local directory holding config.json"
    )
