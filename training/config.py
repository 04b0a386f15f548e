"""TrainConfig: the single source of truth for every train.py option, its default and its help.

The argparse parser, the YAML/JSON config-file reader and the resolved config written into the
output directory are all derived from the dataclass below, so a flag cannot exist in one place
and be missing in another. Precedence: dataclass defaults < demo defaults (``--demo`` or no
arguments at all) < config file < command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from philora.training.config_file import read_options_file
from philora.training.errors import TrainingError
from philora.training.guidance import OneLineArgumentParser, did_you_mean
from philora.training.limits import check_option_bounds

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZE = ("none", "nf4", "fp4")
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit")
SCHEDULES = ("cosine", "linear", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16", "fp16")
RESOLVED_KEY = "resolved"  # section of train_config.yaml written by training.run_record, skipped on --config


def _opt(default: Any, help: str, *, kind: type, choices: tuple | None = None, group: str = "run"):
    """A dataclass field carrying what argparse and the config-file reader need."""
    return field(default=default, metadata={"help": help, "kind": kind, "choices": choices, "group": group})


@dataclass
class TrainConfig:
    """Every option of a training run (flag ``--foo-bar`` is field ``foo_bar``)."""

    # what to train
    model: str | None = _opt(
        None,
        "model: a preset (tiny, phi-1.5, phi-2, phi-3-mini-4k, ...), a hub repo id or a local directory",
        kind=str,
        group="what",
    )
    data: str | None = _opt(
        None,
        "dataset: roleplay, tweetsumm, oasst1, samples/<name> (bundled) or a local .jsonl/.json/.parquet file",
        kind=str,
        group="what",
    )
    revision: str | None = _opt(
        None, "hub revision (branch, tag or commit) of --model (default: the main branch)", kind=str, group="what"
    )
    shape: str | None = _opt(
        None,
        "record shape of --data: messages, sharegpt, alpaca, prompt_completion or text "
        "(default: detected from the first record)",
        kind=str,
        group="what",
    )
    columns: str | None = _opt(
        None,
        "rename the data's columns first: FIELD=COLUMN pairs, e.g. prompt=question,completion=answer",
        kind=str,
        group="what",
    )
    split: str | None = _opt(
        None, "split of a hub dataset repo --data owner/name (default: train)", kind=str, group="what"
    )
    subset: str | None = _opt(None, "subset (folder) of a hub dataset repo --data owner/name", kind=str, group="what")
    eval_data: str | None = _opt(
        None,
        "a separate evaluation dataset (same kinds as --data; default: --data's "
        "validation split or --val-fraction of it)",
        kind=str,
        group="what",
    )
    tokenizer: str | None = _opt(None, "tokenizer to use (default: the model's own)", kind=str, group="what")
    template: str | None = _opt(
        None,
        "prompt format: model (the model's own chat template), phi3, phi3.5, phi4-mini, phi4, "
        "roleplay, human_assistant, instruct, alpaca, instruction, plain (default: model when the tokenizer "
        "ships a template, else its chat format, else the data's usual one)",
        kind=str,
        group="what",
    )
    limit: int | None = _opt(None, "use only the first N records of the dataset", kind=int, group="what")
    val_fraction: float = _opt(0.05, "fraction of the records held out for evaluation", kind=float, group="what")
    train_on_prompt: bool = _opt(
        False, "also compute the loss on prompt/user tokens (default: replies only)", kind=bool, group="what"
    )
    max_seq_len: int = _opt(
        1024, "longest training sequence in tokens (longer examples are truncated by data)", kind=int, group="what"
    )
    packing: bool = _opt(
        True, "pack several examples into one row (attention stays within each example)", kind=bool, group="what"
    )

    # where
    output_dir: str | None = _opt(
        None,
        "run directory for checkpoints, metrics and the adapter (default: runs/<model>-<data>)",
        kind=str,
        group="output",
    )
    overwrite: bool = _opt(
        False,
        "start afresh in an output dir that holds another run (deletes its checkpoints)",
        kind=bool,
        group="output",
    )
    resume: str | None = _opt(
        None,
        "continue a run: 'latest' (newest complete checkpoint in --output-dir) or a checkpoint directory",
        kind=str,
        group="output",
    )
    save_every: int = _opt(
        200, "save a checkpoint every N optimizer steps (0: only at the end)", kind=int, group="output"
    )
    keep_last: int = _opt(3, "keep only the newest K checkpoints", kind=int, group="output")
    eval_every: int = _opt(200, "evaluate every N optimizer steps (0: only at the end)", kind=int, group="output")
    eval_batches: int | None = _opt(
        None, "evaluate on at most N batches (default: the whole validation split)", kind=int, group="output"
    )
    eval_generate: int = _opt(
        0,
        "at every evaluation also generate from the first N validation prompts and log "
        "ROUGE, exact match, length and stop share",
        kind=int,
        group="output",
    )
    eval_generate_tokens: int = _opt(128, "most new tokens per reply for --eval-generate", kind=int, group="output")
    log_every: int = _opt(10, "write a metrics line every N optimizer steps", kind=int, group="output")
    sample_prompt: str | None = _opt(
        None,
        "prompt for the sample generation printed at the end (default: the first validation example's prompt)",
        kind=str,
        group="output",
    )
    sample_tokens: int = _opt(
        48, "tokens to generate for the sample at the end (0: no sample)", kind=int, group="output"
    )

    # how long
    max_steps: int | None = _opt(None, "stop after N optimizer steps (default: run --epochs)", kind=int, group="length")
    epochs: float = _opt(
        1.0, "number of passes over the training split (may be fractional)", kind=float, group="length"
    )
    max_time: float | None = _opt(None, "stop (with a checkpoint) after this many minutes", kind=float, group="length")

    # optimization
    batch_size: int = _opt(4, "rows per micro-batch", kind=int, group="optim")
    eval_batch_size: int = _opt(8, "rows per evaluation batch", kind=int, group="optim")
    grad_accum: int = _opt(
        1, "micro-batches per optimizer step (loss normalized by the window's target tokens)", kind=int, group="optim"
    )
    lr: float = _opt(2e-4, "peak learning rate", kind=float, group="optim")
    schedule: str = _opt("cosine", "learning-rate schedule after warmup", kind=str, choices=SCHEDULES, group="optim")
    warmup: float = _opt(
        0.03, "warmup: a number of steps (>= 1) or a fraction of all steps (< 1)", kind=float, group="optim"
    )
    min_lr_ratio: float = _opt(
        0.0, "final learning rate as a fraction of --lr (cosine and linear)", kind=float, group="optim"
    )
    optimizer: str = _opt(
        "adamw",
        "adamw (torch, fused where available), adamw8bit, paged_adamw, paged_adamw8bit (bitsandbytes)",
        kind=str,
        choices=OPTIMIZERS,
        group="optim",
    )
    weight_decay: float = _opt(0.0, "AdamW weight decay", kind=float, group="optim")
    adam_beta1: float = _opt(0.9, "AdamW beta1", kind=float, group="optim")
    adam_beta2: float = _opt(0.999, "AdamW beta2", kind=float, group="optim")
    adam_eps: float = _opt(1e-8, "AdamW epsilon", kind=float, group="optim")
    max_grad_norm: float = _opt(
        1.0,
        "clip the gradient norm to this value (0: no clipping; the norm is logged before clipping)",
        kind=float,
        group="optim",
    )
    seed: int = _opt(42, "seed for LoRA init, dropout and data order", kind=int, group="optim")

    # LoRA
    lora_r: int = _opt(16, "LoRA rank", kind=int, group="lora")
    lora_alpha: float = _opt(16.0, "LoRA alpha (scaling = alpha / r)", kind=float, group="lora")
    lora_dropout: float = _opt(0.05, "dropout on the LoRA input", kind=float, group="lora")
    targets: str | None = _opt(
        None,
        "comma-separated module names to adapt (default: all attention and MLP projections of the model family)",
        kind=str,
        group="lora",
    )
    adapter: str | None = _opt(
        None,
        "start from this adapter instead of a fresh LoRA: a philora adapter file or a PEFT adapter "
        "directory (its r, alpha and targets are used; default: none)",
        kind=str,
        group="lora",
    )

    # hardware and precision
    device: str = _opt("auto", "cuda when available, else cpu", kind=str, choices=DEVICES, group="hw")
    precision: str = _opt(
        "auto",
        "bf16 (autocast), fp16 (autocast + grad scaler, CUDA only) or fp32; auto: bf16 where the "
        "device runs it natively, else fp16 on old GPUs / fp32 on old CPUs",
        kind=str,
        choices=PRECISIONS,
        group="hw",
    )
    dtype: str = _opt(
        "auto",
        "dtype of the frozen base weights; auto: the compute dtype of --precision (LoRA weights are always fp32)",
        kind=str,
        choices=DTYPES,
        group="hw",
    )
    quantize: str = _opt(
        "none",
        "load the base in 4 bits (QLoRA): nf4 or fp4, with double quantization",
        kind=str,
        choices=QUANTIZE,
        group="hw",
    )
    gradient_checkpointing: bool = _opt(
        False, "recompute layer activations in backward to save memory", kind=bool, group="hw"
    )
    compile: bool = _opt(
        False,
        "compile each decoder layer with torch.compile (inductor; on CPU it needs a C compiler). Off by "
        "default because eager measured faster on CPU (README, Performance); the first steps pay the compilation",
        kind=bool,
        group="hw",
    )
    pad_multiple: int = _opt(
        64,
        "right-pad batches to a multiple of this many tokens (bounds per-shape kernel memory; 1: off)",
        kind=int,
        group="hw",
    )
    loss_chunk: int = _opt(
        256,
        "target tokens per lm_head chunk in the loss (bounds the logits memory to chunk x vocab floats)",
        kind=int,
        group="hw",
    )
    fsdp: bool = _opt(
        False,
        "under torchrun: shard the base and the LoRA weights over the processes "
        "(FSDP2) instead of a whole copy per process",
        kind=bool,
        group="hw",
    )
    dist_timeout: float = _opt(
        1800.0,
        "under torchrun: seconds a process waits for the others in a collective before stopping with an error",
        kind=float,
        group="hw",
    )


# What `python train.py` with no arguments (or --demo) runs: LoRA on the tiny random-init model
# learns the bundled roleplay sample. The tutorial's lr 2e-4 barely moves a random-init base in two
# minutes, so the demo uses lr 1e-2 and a fixed step budget (eval loss 7.75 -> ~3.9; ~20 s in bf16
# on 2 idle AVX512-BF16 cores, ~35 s in fp32 where the CPU has no native bf16).
DEMO_DEFAULTS: dict[str, Any] = {
    "model": "tiny",
    "data": "samples/roleplay",
    "output_dir": "runs/demo",
    "overwrite": True,
    "max_seq_len": 256,
    "batch_size": 8,
    "max_steps": 120,
    "lr": 1e-2,
    "warmup": 5,
    "eval_every": 40,
    "save_every": 40,
    "log_every": 10,
    "device": "cpu",
    "val_fraction": 0.1,
    "sample_tokens": 32,
}

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def flag_name(name: str) -> str:
    """Field ``foo_bar`` -> flag ``--foo-bar``."""
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per TrainConfig field; given flags only (SUPPRESS defaults)."""
    parser = OneLineArgumentParser(
        prog="train.py",
        description=(
            "LoRA/QLoRA fine-tuning of Phi models. `python train.py` with no arguments runs the offline "
            "demo (tiny model, bundled roleplay sample, CPU; demo settings: "
            + ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items())
            + "). Example: python train.py --model phi-2 --data roleplay"
        ),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", help="YAML or JSON file of options (keys as field names or flags); command-line flags override it"
    )
    parser.add_argument("--demo", action="store_true", help="use the demo settings for every option not given")
    groups: dict[str, argparse._ArgumentGroup] = {}
    titles = {
        "what": "model and data",
        "output": "output, checkpoints and evaluation",
        "length": "run length",
        "optim": "optimization",
        "lora": "LoRA",
        "hw": "hardware and precision",
    }
    for name, f in FIELDS.items():
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(titles[meta["group"]]))
        shown = "none" if f.default is None else f.default
        # Fields whose help already explains their default (e.g. "default: the model's own") keep it.
        help_text = meta["help"] if "(default:" in meta["help"] else f"{meta['help']} (default: {shown})"
        if meta["kind"] is bool:
            group.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(
                flag_name(name),
                dest=name,
                type=_cli_converter(name),
                help=help_text,
                metavar=name.upper() if not meta["choices"] else "{" + ",".join(meta["choices"]) + "}",
            )
    return parser


def _cli_converter(name: str):
    def convert(text: str):
        try:
            return coerce(name, text, source="command line")
        except TrainingError as err:  # argparse prefixes "argument --flag: " itself
            raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None

    convert.__name__ = FIELDS[name].metadata["kind"].__name__  # argparse names the type in its errors
    return convert


def coerce(name: str, value: Any, *, source: str) -> Any:
    """Convert ``value`` to field ``name``'s type, or raise a TrainingError naming field and source."""
    f = FIELDS[name]
    kind, choices = f.metadata["kind"], f.metadata["choices"]
    where = f"{flag_name(name)} ({source})"
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and f.default is None):
        if f.default is None:
            return None
        raise TrainingError(f"{where}: a value is required")
    try:
        if kind is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                out = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                out = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        else:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            out = str(value)
    except (TypeError, ValueError):
        raise TrainingError(f"{where}: expected {kind.__name__}, got {reprlib.repr(value)}") from None
    if choices and out not in choices:
        raise TrainingError(f"{where}: {out!r} is not one of {', '.join(choices)}{did_you_mean(out, choices)}")
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a YAML or JSON file, validated against TrainConfig (unknown keys are an error)."""
    raw = read_options_file(path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TrainingError(f"--config {path}: expected a mapping of option names to values, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    unknown = []
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        if key == RESOLVED_KEY:  # a run's train_config.yaml: what the run resolved, not options
            continue
        name = str(key).lstrip("-").replace("-", "_")
        if name not in FIELDS:
            unknown.append(str(key))
            continue
        if name in spelled:
            raise TrainingError(
                f"--config {path}: option {flag_name(name)} is given twice ({spelled[name]!r} and "
                f"{str(key)!r}); keep one"
            )
        spelled[name] = str(key)
        out[name] = coerce(name, value, source=f"config file {path}")
    if unknown:
        hints = "".join(did_you_mean(key.lstrip("-").replace("-", "_"), FIELDS, quote=True) for key in sorted(unknown))
        raise TrainingError(
            f"--config {path}: unknown key(s) {', '.join(sorted(unknown))}{hints}; valid keys are the flags of "
            f"`python train.py --help` (e.g. lora_r or lora-r)"
        )
    return out


def parse_config(argv: list[str]) -> TrainConfig:
    """Build the run's TrainConfig from command-line arguments (see the module docstring for precedence)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    demo = bool(args.pop("demo", False)) or len(argv) == 0
    config_path = args.pop("config", None)
    values: dict[str, Any] = {}
    if demo:
        values.update(DEMO_DEFAULTS)
    if config_path:
        values.update(read_config_file(config_path))
    values.update(args)
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Check value ranges and required options; raise a one-line TrainingError on the first problem."""
    if not cfg.model:
        raise TrainingError(
            "--model is required (e.g. --model phi-2); run `python train.py` with no arguments for the offline demo"
        )
    if not cfg.data:
        raise TrainingError(
            "--data is required (e.g. --data roleplay); run `python train.py` with no arguments for the offline demo"
        )
    positive = [
        "batch_size",
        "eval_batch_size",
        "grad_accum",
        "lora_r",
        "max_seq_len",
        "keep_last",
        "log_every",
        "loss_chunk",
        "pad_multiple",
        "eval_generate_tokens",
    ]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise TrainingError(f"{flag_name(name)} must be >= 1, got {getattr(cfg, name)}")
    for name in ["save_every", "eval_every", "sample_tokens", "eval_generate"]:
        if getattr(cfg, name) < 0:
            raise TrainingError(f"{flag_name(name)} must be >= 0, got {getattr(cfg, name)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise TrainingError(f"--max-steps must be >= 1, got {cfg.max_steps}")
    if cfg.epochs <= 0:
        raise TrainingError(f"--epochs must be > 0, got {cfg.epochs}")
    if cfg.max_time is not None and cfg.max_time <= 0:
        raise TrainingError(f"--max-time must be > 0 minutes, got {cfg.max_time}")
    if cfg.lr <= 0:
        raise TrainingError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.warmup < 0:
        raise TrainingError(f"--warmup must be >= 0, got {cfg.warmup}")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise TrainingError(f"--lora-dropout must be in [0, 1), got {cfg.lora_dropout}")
    if not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise TrainingError(f"--min-lr-ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise TrainingError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.max_grad_norm < 0:
        raise TrainingError(f"--max-grad-norm must be >= 0, got {cfg.max_grad_norm}")
    if cfg.limit is not None and cfg.limit < 1:
        raise TrainingError(f"--limit must be >= 1, got {cfg.limit}")
    check_option_bounds(cfg)
    if cfg.compile and cfg.fsdp:
        raise TrainingError("--compile is not supported together with --fsdp yet; drop one of them")
    if cfg.eval_generate and cfg.train_on_prompt:
        raise TrainingError(
            "--eval-generate needs masked prompts to generate from, and --train-on-prompt makes every "
            "token a target; drop one of them (philora eval RUN can still generate afterwards)"
        )


def dump_config(cfg: TrainConfig, extra: dict[str, Any] | None = None, resolved: dict[str, Any] | None = None) -> str:
    """YAML text of the resolved config, readable back with ``--config`` (``extra`` goes in a comment,
    ``resolved`` into a ``resolved:`` section that ``--config`` skips)."""
    values = dataclasses.asdict(cfg)
    if resolved is not None:
        values[RESOLVED_KEY] = resolved
    text = yaml.safe_dump(values, sort_keys=False)
    if extra:
        notes = "".join(f"# {k}: {v}\n" for k, v in extra.items())
        text = "# resolved by train.py\n" + notes + text
    return text
