"""PhiConfig: one dataclass for every Phi variant, parsed from any config.json we meet.

Three config.json dialects exist (docs/architecture.md, "Config dialects"): HF-native ``phi``,
legacy remote-code ``phi-msft`` and ``phi3`` (Phi-3, 3.5, 4-mini, phi-4). On top
of that transformers 5 writes rope settings under ``rope_parameters`` while
older files use top-level ``rope_theta`` / ``partial_rotary_factor`` and a
``rope_scaling`` dict. ``PhiConfig.from_dict`` normalises all of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi_models.config_checks import check_config_values
from phi_models.errors import PhiModelError
from phi_models.json_files import read_json

ARCHITECTURES = ("phi", "phi3")
# LoRA targets per architecture when none are given: every attention and MLP projection (the tutorials' recipe).
DEFAULT_LORA_TARGETS = {
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
SLIDING_WINDOW_MODES = ("w+1", "w")
_LONGROPE_NAMES = {"longrope", "su", "yarn"}
# Remote-code phi-1.5/2 configs (n_embd, n_layer, ...): Nov 2023 phi-msft and the Sept 2023 MixFormer.
_LEGACY_TYPES = {"phi-msft", "mixformer-sequential"}
_ACTIVATIONS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "silu", "swish"}


@dataclass
class PhiConfig:
    """Architecture of one Phi model; field names follow HF config.json where one exists.

    ``model_type`` is ``"phi"`` (phi-1.5/2: parallel block, LayerNorm, biases) or
    ``"phi3"`` (Phi-3 family: sequential block, RMSNorm, fused qkv/gate_up).
    ``sliding_window_mode`` picks which keys a window of W admits: ``"w+1"``
    (default; keys q-W..q, 2048 for Phi-3-mini-4k, the flash-attn kernel the
    model was trained with) or ``"w"`` (keys q-W+1..q, transformers 5.23).
    """

    model_type: str = "phi"
    vocab_size: int = 51200
    hidden_size: int = 2560
    intermediate_size: int = 10240
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    partial_rotary_factor: float | None = None
    rope_theta: float = 10000.0
    rope_type: str = "default"
    short_factor: list[float] | None = None
    long_factor: list[float] | None = None
    rope_attention_factor: float | None = None
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int = 2048
    norm_eps: float = 1e-5
    hidden_act: str | None = None
    tie_word_embeddings: bool = False
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    attention_dropout: float = 0.0
    sliding_window: int | None = None
    sliding_window_mode: str = "w+1"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    torch_dtype: str | None = None

    def __post_init__(self) -> None:
        check_config_values(self)  # types and ranges first: the checks below divide by these
        if self.model_type not in ARCHITECTURES:
            raise PhiModelError(
                f"unknown model_type '{self.model_type}': phi_models supports {', '.join(ARCHITECTURES)} "
                f"(and legacy 'phi-msft' in config.json)"
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise PhiModelError(
                    f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise PhiModelError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.partial_rotary_factor is None:
            # transformers' backward-compatible defaults (docs/architecture.md, "Config dialects")
            self.partial_rotary_factor = 0.5 if self.model_type == "phi" else 1.0
        if self.hidden_act is None:
            self.hidden_act = "gelu_new" if self.model_type == "phi" else "silu"
        if self.hidden_act not in _ACTIVATIONS:
            raise PhiModelError(f"unsupported hidden_act '{self.hidden_act}'; expected one of {sorted(_ACTIVATIONS)}")
        if self.sliding_window_mode not in SLIDING_WINDOW_MODES:
            raise PhiModelError(
                f"sliding_window_mode '{self.sliding_window_mode}' must be one of {SLIDING_WINDOW_MODES}"
            )
        if self.rope_type in _LONGROPE_NAMES:
            self.rope_type = "longrope"
            self._check_longrope()
        elif self.rope_type != "default":
            raise PhiModelError(f"unsupported rope type '{self.rope_type}': expected none or longrope/su")

    def _check_longrope(self) -> None:
        half = self.rotary_dim // 2
        for name in ("short_factor", "long_factor"):
            values = getattr(self, name)
            if values is None or len(values) != half:
                got = "missing" if values is None else f"{len(values)} values"
                raise PhiModelError(f"rope_scaling.{name} must hold rotary_dim/2 = {half} values, got {got}")
            setattr(self, name, [float(v) for v in values])
        if self.original_max_position_embeddings is None:
            self.original_max_position_embeddings = self.max_position_embeddings

    # ---- derived quantities -------------------------------------------------------------

    @property
    def rotary_dim(self) -> int:
        """Number of leading head dims that RoPE rotates."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (equal to the query heads without GQA)."""
        return int(self.num_key_value_heads)

    @property
    def longrope_attention_factor(self) -> float:
        """Scale LongRoPE puts on cos and sin (1.0 for plain RoPE), per docs/architecture.md, "LongRoPE"."""
        if self.rope_type != "longrope":
            return 1.0
        if self.rope_attention_factor is not None:
            return float(self.rope_attention_factor)
        scale = self.max_position_embeddings / self.original_max_position_embeddings
        if scale <= 1.0:
            return 1.0
        return math.sqrt(1.0 + math.log(scale) / math.log(self.original_max_position_embeddings))

    @property
    def qkv_slices(self) -> dict[str, int]:
        """Output rows of the fused q/k/v projection, in stored order."""
        q = self.num_attention_heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return {"q_proj": q, "k_proj": kv, "v_proj": kv}

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS ids from the config as a list."""
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]

    # ---- (de)serialisation --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` reads back to an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> PhiConfig:
        """Parse an HF ``phi`` / ``phi3`` / legacy ``phi-msft`` config dict (or our own ``to_dict``)."""
        if not isinstance(raw, dict):
            raise PhiModelError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        try:
            if model_type in _LEGACY_TYPES:
                kwargs = _from_phi_msft(raw)
            elif model_type in ARCHITECTURES:
                kwargs = _from_hf(raw, model_type)
            else:
                raise PhiModelError(
                    f"{source}: unknown model_type '{model_type}'; phi_models reads 'phi', 'phi3' and the "
                    f"legacy 'phi-msft' / 'mixformer-sequential'"
                )
            return cls(**kwargs)
        except PhiModelError as err:
            if str(err).startswith(source):
                raise
            raise PhiModelError(f"{source}: {err}") from None
        except KeyError as err:
            raise PhiModelError(f"{source}: malformed config (missing key {err})") from None
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as err:
            raise PhiModelError(f"{source}: malformed config ({str(err)[:200]})") from None

    @classmethod
    def from_file(cls, path: str | Path) -> PhiConfig:
        """Read a config.json file."""
        path = Path(path)
        if not path.exists():
            raise PhiModelError(f"{path}: config.json not found; a model directory needs config.json")
        return cls.from_dict(read_json(path, "config.json"), source=str(path))


_OWN_FIELDS = {f.name for f in dataclasses.fields(PhiConfig)}


def default_lora_targets(config_or_model_type: PhiConfig | str) -> list[str]:
    """The LoRA targets of an architecture (a ``PhiConfig`` or its ``model_type``) when none are given."""
    model_type = getattr(config_or_model_type, "model_type", config_or_model_type)
    if model_type not in DEFAULT_LORA_TARGETS:
        raise PhiModelError(
            f"no default LoRA targets for model type {model_type!r}: phi_models knows {', '.join(ARCHITECTURES)}"
        )
    return list(DEFAULT_LORA_TARGETS[model_type])


def _from_hf(raw: dict[str, Any], model_type: str) -> dict[str, Any]:
    if "sliding_window_mode" in raw or "norm_eps" in raw:  # our own to_dict output
        return {k: v for k, v in raw.items() if k in _OWN_FIELDS}
    # transformers 5 nests rope settings in rope_parameters; older files use rope_scaling + top-level keys
    rope = dict(raw.get("rope_scaling") or {})
    rope.update(raw.get("rope_parameters") or {})
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
    eps_key = "layer_norm_eps" if model_type == "phi" else "rms_norm_eps"
    kwargs: dict[str, Any] = dict(
        model_type=model_type,
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        num_key_value_heads=raw.get("num_key_value_heads"),
        head_dim=raw.get("head_dim"),
        partial_rotary_factor=partial,
        rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
        rope_type=rope_type,
        short_factor=rope.get("short_factor"),
        long_factor=rope.get("long_factor"),
        rope_attention_factor=rope.get("attention_factor"),
        original_max_position_embeddings=rope.get(
            "original_max_position_embeddings", raw.get("original_max_position_embeddings")
        ),
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        norm_eps=float(raw.get(eps_key, 1e-5)),
        hidden_act=raw.get("hidden_act"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        resid_pdrop=float(raw.get("resid_pdrop", 0.0) or 0.0),
        embd_pdrop=float(raw.get("embd_pdrop", 0.0) or 0.0),
        attention_dropout=float(raw.get("attention_dropout", 0.0) or 0.0),
        sliding_window=raw.get("sliding_window"),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
        torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
    )
    if raw.get("qk_layernorm"):
        raise PhiModelError("qk_layernorm=true is not used by any Phi checkpoint and is not supported")
    return kwargs


def _from_phi_msft(raw: dict[str, Any]) -> dict[str, Any]:
    hidden = raw["n_embd"]
    heads = raw["n_head"]
    head_dim = hidden // heads
    rotary_dim = raw.get("rotary_dim", head_dim // 2)  # a count of dims here, not a fraction
    return dict(
        model_type="phi",
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        intermediate_size=raw.get("n_inner") or 4 * hidden,
        num_hidden_layers=raw["n_layer"],
        num_attention_heads=heads,
        num_key_value_heads=raw.get("n_head_kv"),
        partial_rotary_factor=rotary_dim / head_dim,
        max_position_embeddings=raw.get("n_positions", 2048),
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        hidden_act=raw.get("activation_function", "gelu_new"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        resid_pdrop=float(raw.get("resid_pdrop", 0.0) or 0.0),
        embd_pdrop=float(raw.get("embd_pdrop", 0.0) or 0.0),
        attention_dropout=float(raw.get("attn_pdrop", 0.0) or 0.0),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        torch_dtype=raw.get("torch_dtype"),
    )
