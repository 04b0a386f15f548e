"""Upper bounds on options, checked before any work: a typo like ``--pad-multiple 1e9`` or ``--lora-r 100000``
must be a one-line error, not a native abort or an hour of allocation.

``check_option_bounds`` runs with the config's other range checks; ``check_against_model`` once the
model's config is known (positions and sizes come from it).
"""

from __future__ import annotations

from philora.training.errors import TrainingError

# Generous ceilings: far above any sensible run, far below what makes torch abort or swap.
UPPER = {
    "batch_size": 1 << 16,
    "eval_batch_size": 1 << 16,
    "grad_accum": 1 << 20,
    "max_seq_len": 1 << 20,
    "loss_chunk": 1 << 20,
    "lora_r": 1 << 13,
    "sample_tokens": 1 << 20,
    "keep_last": 1 << 20,
    "max_steps": 1 << 40,
    "eval_batches": 1 << 40,
}
DEFAULT_PAD_MULTIPLE = 64


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_option_bounds(cfg) -> None:
    """Range checks the basic ones in ``training.config.validate`` do not cover."""
    for name, high in UPPER.items():
        value = getattr(cfg, name)
        if value is not None and value > high:
            raise TrainingError(f"{_flag(name)} {value} is larger than the most philora accepts ({high})")
    if cfg.eval_batches is not None and cfg.eval_batches < 1:
        raise TrainingError(
            f"--eval-batches must be >= 1 (leave it out to evaluate the whole validation split), got {cfg.eval_batches}"
        )
    pad_limit = max(cfg.max_seq_len, DEFAULT_PAD_MULTIPLE)
    if cfg.pad_multiple > pad_limit:
        raise TrainingError(
            f"--pad-multiple {cfg.pad_multiple} is larger than --max-seq-len {cfg.max_seq_len}: "
            f"rows would be padded past the longest sequence; use at most {pad_limit} (1: off)"
        )
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise TrainingError(f"{_flag(name)} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0.0 < cfg.adam_eps <= 1.0:
        raise TrainingError(
            f"--adam-eps must be in (0, 1], got {cfg.adam_eps} (0 divides by zero on a zero second moment)"
        )
    if cfg.weight_decay < 0:
        raise TrainingError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.seed < 2**63:
        raise TrainingError(f"--seed must be in [0, 2**63), got {cfg.seed}")


def check_against_model(cfg, model_config) -> None:
    """Options that must fit the model: sequence length and sample length within its positions, the rank
    within its width."""
    positions = model_config.max_position_embeddings
    if cfg.max_seq_len > positions:
        raise TrainingError(
            f"--max-seq-len {cfg.max_seq_len} is longer than the model's {positions} positions "
            f"(max_position_embeddings of {cfg.model}); use at most {positions}"
        )
    if cfg.sample_tokens >= positions:
        raise TrainingError(
            f"--sample-tokens {cfg.sample_tokens} does not fit the model's {positions} positions "
            f"with a prompt; use fewer (0: no sample)"
        )
    width = model_config.hidden_size
    if cfg.lora_r > width:
        raise TrainingError(
            f"--lora-r {cfg.lora_r} is larger than the model's hidden size {width}: a LoRA rank "
            f"cannot exceed the layer width; use at most {width} (typically 8-64)"
        )
