"""Types and sane ranges of every PhiConfig size, checked before a model is built from it.

A config.json is input like any other: zero heads, negative or fractional sizes, or
``num_hidden_layers: 10000000`` (which would build ten million modules) must be a one-line
PhiModelError naming the field, not a ZeroDivisionError or a hang.
"""

from __future__ import annotations

import math

from phi_models.errors import PhiModelError

# field -> largest accepted value (far above every Phi model: phi-4 has 40 layers, 5120 hidden, 100352 vocab).
INT_LIMITS = {
    "vocab_size": 1 << 22,
    "hidden_size": 1 << 16,
    "intermediate_size": 1 << 18,
    "num_hidden_layers": 1 << 10,
    "num_attention_heads": 1 << 10,
    "num_key_value_heads": 1 << 10,
    "head_dim": 1 << 12,
    "max_position_embeddings": 1 << 24,
    "original_max_position_embeddings": 1 << 24,
    "sliding_window": 1 << 24,
}
OPTIONAL_INTS = {"num_key_value_heads", "head_dim", "original_max_position_embeddings", "sliding_window"}
MAX_PARAMETERS = 1 << 40  # a trillion: nothing a single machine fine-tunes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_config_values(cfg) -> None:
    """Raise a PhiModelError for the first size, factor or token id of ``cfg`` that is not usable."""
    for name, high in INT_LIMITS.items():
        value = getattr(cfg, name)
        if value is None and name in OPTIONAL_INTS:
            continue
        if not _is_int(value):
            raise PhiModelError(f"{name} must be a positive integer, got {value!r:.60}")
        if not 1 <= value <= high:
            raise PhiModelError(f"{name} is {value}; it must be between 1 and {high}")
    for name, low, high, open_low in (
        ("rope_theta", 0.0, None, True),
        ("norm_eps", 0.0, 1.0, True),
        ("partial_rotary_factor", 0.0, 1.0, True),
        ("rope_attention_factor", 0.0, None, True),
        ("resid_pdrop", 0.0, 1.0, False),
        ("embd_pdrop", 0.0, 1.0, False),
        ("attention_dropout", 0.0, 1.0, False),
    ):
        value = getattr(cfg, name)
        if value is None and name in ("partial_rotary_factor", "rope_attention_factor"):
            continue
        if not _is_number(value) or (value <= low if open_low else value < low) or (high is not None and value > high):
            bounds = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'}]"
            raise PhiModelError(f"{name} must be a finite number in {bounds}, got {value!r:.60}")
    for name in ("bos_token_id", "pad_token_id"):
        value = getattr(cfg, name)
        if value is not None and not (_is_int(value) and value >= 0):
            raise PhiModelError(f"{name} must be a token id (an integer >= 0) or null, got {value!r:.60}")
    eos = cfg.eos_token_id
    eos_ids = eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    if not all(_is_int(i) and i >= 0 for i in eos_ids):
        raise PhiModelError(f"eos_token_id must be a token id or a list of them, got {eos!r:.60}")
    for name in ("short_factor", "long_factor"):
        values = getattr(cfg, name)
        if values is not None and (not isinstance(values, (list, tuple)) or not all(_is_number(v) for v in values)):
            raise PhiModelError(f"rope_scaling.{name} must be a list of finite numbers")
    if not isinstance(cfg.hidden_act, (str, type(None))) or not isinstance(cfg.rope_type, str):
        raise PhiModelError("hidden_act and rope type must be strings")
    if cfg.torch_dtype is not None and not isinstance(cfg.torch_dtype, str):
        raise PhiModelError(f"torch_dtype must be a string like 'bfloat16', got {cfg.torch_dtype!r:.60}")
    estimate = (
        cfg.num_hidden_layers * (4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size)
        + 2 * cfg.vocab_size * cfg.hidden_size
    )
    if estimate > MAX_PARAMETERS:
        raise PhiModelError(
            f"the sizes describe a model of about {estimate:.3g} parameters, beyond the "
            f"{MAX_PARAMETERS:.3g} philora accepts; check hidden_size, intermediate_size, "
            f"num_hidden_layers and vocab_size"
        )
