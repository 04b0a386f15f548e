"""One training run end to end: config -> data -> model + LoRA -> fit -> adapter, summary, sample.

``train.py`` calls :func:`main`; tests call it in-process with an argv list.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

import lora_core
import phi_models
from lora_core import LoRAError, atomic_write
from lora_core.linear4bit import keep_standard_4bit_layout
from phi_models import HubError, PhiConfig, PhiModelError
from phi_models.source import resolve_source
from philora import data
from philora.data import IGNORE_INDEX, DataError
from philora.deploy.checks import training_warnings
from philora.training.checkpoint import (
    ADAPTER_FILE,
    CHECKPOINT_DIR,
    STATE_FILE,
    TrainingState,
    list_checkpoints,
    load_training_state,
    resolve_resume,
    state_from_payload,
)
from philora.training.config import TrainConfig, dump_config, flag_name, parse_config
from philora.training.distributed import Distributed, open_distributed
from philora.training.errors import TrainingError
from philora.training.finite import check_finite_lora
from philora.training.gen_eval import training_generation_eval
from philora.training.guidance import empty_reply_note, session_summary, small_data_note
from philora.training.limits import check_against_model
from philora.training.loop import Trainer
from philora.training.optim import build_optimizer
from philora.training.oserrors import describe_os_error, disk_full_is_oserror
from philora.training.plots import plot_summary_line
from philora.training.precision import Precision, base_dtype, resolve_device, resolve_precision
from philora.training.progress import METRICS_FILE, peak_memory_mb
from philora.training.rng import seed_everything, set_rng_state
from philora.training.run_record import build_record, write_run_peft_copy
from philora.training.rundir import acquire_run_lock, clear_run, make_output_dir, release_run_locks, write_marker
from philora.training.schedule import LRSchedule, warmup_steps_for
from philora.training.signals import EXIT_CODES, Terminated, sigterm_exits
from philora.training.targets_check import check_targets, meta_model
from philora.training.validate_state import check_against_run

CONFIG_FILE = "train_config.yaml"
FINAL_ADAPTER = "adapter.safetensors"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, FINAL_ADAPTER)


# Options a resume must repeat: they decide the model, the data and its batch order (epoch/batch_index
# point into that list), the LoRA layers and the optimizer and schedule whose state the checkpoint holds.
# Everything else may change on resume: run length (--max-steps, --epochs, --max-time), output,
# evaluation and logging, and how the same computation runs (--device, --precision, --dtype,
# --gradient-checkpointing, --pad-multiple, --loss-chunk, --eval-batch-size).
RESUME_LOCKED = (
    "model",
    "data",
    "shape",
    "columns",
    "split",
    "subset",
    "eval_data",
    "tokenizer",
    "template",
    "limit",
    "val_fraction",
    "train_on_prompt",
    "max_seq_len",
    "packing",
    "quantize",
    "batch_size",
    "grad_accum",
    "seed",
    "lr",
    "schedule",
    "warmup",
    "min_lr_ratio",
    "optimizer",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
    "max_grad_norm",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
)


def locked_config(cfg: TrainConfig, targets: list[str] | None = None) -> dict:
    """The RESUME_LOCKED options of ``cfg`` (plus the resolved LoRA targets, once known)."""
    out = {name: getattr(cfg, name) for name in RESUME_LOCKED}
    if targets is not None:
        out["targets"] = ",".join(targets)
    return out


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def check_resume_config(checkpoint: Path, stored: dict | None, current: dict) -> None:
    """Refuse a resume whose locked options differ from those the checkpoint was trained with."""
    if stored is None:
        say(f"note: {checkpoint} records no run options (older checkpoint); resuming without checking them")
        return
    differ = [
        f"{flag_name(name)} {_shown(value)} (checkpoint: {_shown(stored.get(name))})"
        for name, value in current.items()
        if name in stored and stored[name] != value
    ]
    if differ:
        raise TrainingError(
            f"--resume {checkpoint}: options differ from the run being resumed: {', '.join(differ)}; "
            f"resume with the checkpoint's values, or start a new run (--overwrite or another --output-dir)"
        )


def say(text: str) -> None:
    """A line of run output on stdout."""
    print(text, flush=True)


def default_output_dir(cfg: TrainConfig) -> str:
    """``runs/<model>-<data>`` from the last path component of each name."""

    def short(name: str) -> str:
        return Path(name.rstrip("/")).name.replace(".", "_") or "run"

    return str(Path("runs") / f"{short(cfg.model)}-{short(Path(cfg.data).stem)}")


def prepare_output_dir(cfg: TrainConfig) -> Path:
    """Create the run directory; refuse one that holds another run unless --resume or --overwrite."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--output-dir {out}: exists and is not a directory")
    holds_run = out.is_dir() and (any((out / f).exists() for f in RUN_FILES) or (out / CHECKPOINT_DIR).exists())
    make_output_dir(out)
    acquire_run_lock(out)  # before anything in it is changed (a run using it is named first); main() releases it
    if holds_run and not cfg.resume and not cfg.overwrite:
        if not list_checkpoints(out):
            raise TrainingError(
                f"--output-dir {out} holds a run with no complete checkpoint (it stopped before "
                f"its first save): pass --overwrite to start it afresh, or another --output-dir"
            )
        raise TrainingError(
            f"--output-dir {out} already holds a run: pass --resume latest to continue it, "
            f"--overwrite to start afresh there, or another --output-dir"
        )
    if holds_run and not cfg.resume:
        clear_run(out, RUN_FILES, CHECKPOINT_DIR)
    write_marker(out)
    return out


def resolve_targets(cfg: TrainConfig, model_config: PhiConfig) -> list[str]:
    """--targets as a list, or the architecture's default set (``phi_models.default_lora_targets``)."""
    if cfg.targets:
        names = [t.strip() for t in cfg.targets.split(",") if t.strip()]
        if not names:
            raise TrainingError(f"--targets {cfg.targets!r}: give comma-separated module names, e.g. q_proj,v_proj")
        return names
    return phi_models.default_lora_targets(model_config)


def load_model_and_data(cfg: TrainConfig, device: torch.device, precision: Precision):
    """Tokenizer, prepared dataset and the (possibly 4-bit) base model."""
    tokenizer = phi_models.load_tokenizer(cfg.tokenizer or cfg.model, revision=None if cfg.tokenizer else cfg.revision)
    prepared = data.prepare(
        cfg.data,
        tokenizer,
        template=cfg.template,
        max_seq_len=cfg.max_seq_len,
        train_on_prompt=cfg.train_on_prompt,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        limit=cfg.limit,
        eval_data=cfg.eval_data,
        shape=cfg.shape,
        columns=cfg.columns,
        split=cfg.split,
        subset=cfg.subset,
    )
    if not prepared.train:
        raise TrainingError(f"--data {cfg.data}: no training examples after preparation; check the source and --limit")
    quantize = None if cfg.quantize == "none" else cfg.quantize
    dtype = base_dtype(cfg.dtype, precision)
    model = phi_models.from_pretrained(cfg.model, dtype=dtype, device=device, quantize=quantize, revision=cfg.revision)
    if quantize is not None:
        keep_standard_4bit_layout(model)  # evaluation mid-training must not repack weights training needs
    return tokenizer, prepared, model


def add_lora(cfg: TrainConfig, model: torch.nn.Module, targets: list[str]) -> tuple[list[str], dict]:
    """Inject LoRA (fp32 factors, base frozen) into ``targets``, or attach --adapter; returns the targets
    (the adapter's layers with --adapter) and the adapter config."""
    if cfg.adapter:  # continue training an adapter (ours or PEFT's): its layout replaces --targets/--lora-r
        config = phi_models.attach_adapter(model, cfg.adapter, lora_dropout=cfg.lora_dropout)
        return list(config.get("adapted") or config["targets"]), dict(model.lora_core_config, base_model=cfg.model)
    # inject's freeze_base (the default) freezes all but the LoRA factors, biases too (loralib's bias='none').
    lora_core.inject(model, targets=targets, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
    # inject records everything needed to rebuild the adapter; add where the base came from.
    return targets, dict(model.lora_core_config, base_model=cfg.model)


def validation_batches(
    cfg: TrainConfig, examples: list, pad_id: int, *, rank: int = 0, world_size: int = 1
) -> list[dict]:
    """The evaluation batches of ``examples`` exactly as training builds them (``philora eval`` reuses this).

    Under torchrun each rank gets its share, all of them kept (evaluation has no per-batch collective under DDP).
    """
    return data.make_batches(
        examples,
        batch_size=cfg.eval_batch_size,
        max_seq_len=cfg.max_seq_len,
        pad_id=pad_id,
        packing=cfg.packing,
        shuffle=False,
        seed=cfg.seed,
        epoch=0,
        pad_to_multiple=cfg.pad_multiple,
        rank=rank,
        world_size=world_size,
        drop_uneven=False,
    )


def plan_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: --max-steps, else --epochs worth of accumulation windows."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def run(cfg: TrainConfig, dist: Distributed | None = None) -> int:
    """Train as ``cfg`` says; returns the process exit code (0, or 130/143 after SIGINT/SIGTERM).

    ``dist`` is this process's place in a torchrun launch (default: a single process).
    """
    dist = dist or Distributed()
    device = dist.device or resolve_device(cfg.device)
    precision = Precision(resolve_precision(cfg.precision, device), device)
    if cfg.output_dir is None:
        cfg.output_dir = default_output_dir(cfg)
    out = dist.run_on_main(lambda: prepare_output_dir(cfg))
    resume_from = dist.run_on_main(lambda: resolve_resume(cfg.resume, out)) if cfg.resume else None

    # The targets and the options a resume must repeat are checked before the (slow) loading:
    # config.json alone names the architecture, hence the default targets.
    model_config = resolve_source(cfg.model, cfg.revision).config()
    targets = resolve_targets(cfg, model_config)
    if cfg.targets:  # a typo in --targets is reported before the data is tokenized
        check_targets(targets, meta_model(model_config))
    payload = None
    if resume_from is not None:  # --targets given or not, what counts is the resolved list
        payload = load_training_state(resume_from)
        current = locked_config(cfg, None if cfg.adapter else targets)  # --adapter: its layers, checked below
        check_resume_config(resume_from, *dist.resume_view(payload, current))
    seed_everything(cfg.seed)
    tokenizer, prepared, model = load_model_and_data(cfg, device, precision)
    check_against_model(cfg, model.config)  # positions and width; before LoRA and any training
    say(str(prepared.report))
    targets, adapter_config = add_lora(cfg, model, targets)
    if payload is not None and cfg.adapter:  # the adapter's layers are known only once it is attached
        check_resume_config(resume_from, payload.get("run_config"), {"targets": ",".join(targets)})
    if cfg.gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    if cfg.compile:
        model.compile_layers()
    lora_core.print_trainable_parameters(model)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def epoch_batches(epoch: int) -> list[dict]:
        return data.make_batches(
            prepared.train,
            batch_size=cfg.batch_size,
            max_seq_len=cfg.max_seq_len,
            pad_id=pad_id,
            packing=cfg.packing,
            shuffle=True,
            seed=cfg.seed,
            epoch=epoch,
            pad_to_multiple=cfg.pad_multiple,
            rank=dist.rank,
            world_size=dist.world_size,
        )

    val_batches = validation_batches(cfg, prepared.val, pad_id, rank=dist.rank, world_size=dist.world_size)
    first_epoch = epoch_batches(0)
    total_steps = plan_steps(cfg, len(first_epoch))
    model = dist.prepare_model(model, seed=cfg.seed, precision=precision.name)  # DDP or FSDP2 under torchrun
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(
        params,
        name=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
    )
    schedule = LRSchedule(
        optimizer,
        kind=cfg.schedule,
        peak_lr=cfg.lr,
        total_steps=total_steps,
        warmup_steps=warmup_steps_for(cfg.warmup, total_steps),
        min_lr_ratio=cfg.min_lr_ratio,
    )
    scaler = precision.make_scaler()
    state = TrainingState()
    if resume_from is not None:
        if not dist.fsdp:  # not yet under FSDP: its LoRA params and moments are sharded DTensors
            position_epoch = payload["epoch"]
            check_against_run(
                payload,
                resume_from / STATE_FILE,
                optimizer=optimizer,
                scaler=scaler,
                batches_in_epoch=len(first_epoch if position_epoch == 0 else epoch_batches(position_epoch)),
            )
        state = restore(resume_from, payload, model, optimizer, schedule, scaler, dist=dist, seed=cfg.seed)
        say(f"resuming from {resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_index})")
        extended = schedule.extend_to(total_steps)  # more --max-steps/--epochs than the checkpoint planned
        if extended:
            say(extended)
    note = small_data_note(
        total_steps,
        len(first_epoch),
        len(prepared.train),
        cfg.batch_size,
        cfg.grad_accum,
        cfg.epochs,
        cfg.max_steps,
        schedule.warmup_steps,
    )
    if note:
        say(note)
    start_step = state.step

    record = build_record(
        cfg,
        model=model,
        tokenizer=tokenizer,
        template=prepared.template,
        targets=targets,
        adapter_config=adapter_config,
        precision=precision.name,
        device=str(device),
        total_steps=total_steps,
    )
    resolved = dump_config(
        cfg,
        extra={
            "precision": precision.name,
            "device": str(device),
            "targets": ",".join(targets),
            "total_steps": total_steps,
            "processes": dist.world_size,
        },
        resolved=record,
    )
    if dist.is_main:
        atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(resolved, encoding="utf-8"))

    metrics = dist.metrics_log(out, resume_step=state.step if resume_from is not None else None)
    generation_eval = None
    if cfg.eval_generate:
        generation_eval = training_generation_eval(
            tokenizer,
            prepared.val,
            count=cfg.eval_generate,
            max_new_tokens=cfg.eval_generate_tokens,
            batch_size=cfg.eval_batch_size,
            precision=precision,
        )
    progress = dist.progress_bar(total_steps, start_step=state.step)
    say(
        f"training {total_steps} step{'s' if total_steps != 1 else ''} on {device} in {precision.name}"
        f"{' with a 4-bit ' + cfg.quantize + ' base' if cfg.quantize != 'none' else ''}: "
        f"{len(first_epoch)} batches/epoch{dist.describe()}, batch {cfg.batch_size} x accum "
        f"{cfg.grad_accum}, lr {cfg.lr:g} ({cfg.schedule})"
    )
    trainer = Trainer(
        cfg,
        total_steps,
        model,
        optimizer,
        schedule,
        scaler,
        precision,
        state,
        str(out),
        adapter_config=adapter_config,
        run_config=locked_config(cfg, targets),
        generation_eval=generation_eval,
        parallel=dist if dist.active else None,
    )
    existing = list_checkpoints(out)
    try:
        result = trainer.fit(
            lambda e: first_epoch if e == 0 else epoch_batches(e),
            val_batches,
            metrics=metrics,
            progress=progress,
            last_checkpoint=str(existing[-1]) if existing else None,
        )
    finally:
        metrics.close()

    if result.stopped_by in ("SIGINT", "SIGTERM"):
        say(
            f"{result.stopped_by} received: checkpoint saved to {result.last_checkpoint} at step {state.step}; "
            f"continue with --resume latest --output-dir {out}"
        )
        return EXIT_CODES[result.stopped_by]

    adapter_path = out / FINAL_ADAPTER
    with dist.gathered_lora(model) as writes:  # FSDP: the shards joined; only rank 0 writes
        if writes:
            with disk_full_is_oserror(adapter_path):
                lora_core.save_adapter(model, adapter_path, config=adapter_config)
            write_run_peft_copy(model, out, record, say)
    dist.barrier()
    print_summary(result, adapter_path, device, start_step)
    if dist.is_main:
        say(plot_summary_line(out))
        for line in training_warnings(out):  # what peft / vLLM / llama.cpp / Ollama would refuse, said now
            say(line)
    if cfg.sample_tokens:
        print_sample(cfg, model, tokenizer, prepared, precision)
    return 0


def restore(
    checkpoint: Path,
    payload: dict,
    model,
    optimizer,
    schedule,
    scaler,
    *,
    dist: Distributed | None = None,
    seed: int = 0,
) -> TrainingState:
    """Load a checkpoint's adapter and read state ``payload`` (optimizer, schedule, scaler, RNG); return its counters.

    Under torchrun each rank takes its own RNG states and its share of the data position.
    """
    dist = dist or Distributed()
    dist.load_adapter(model, checkpoint / ADAPTER_FILE)  # strict: same targets and rank, or fail loudly
    if not dist.fsdp:  # sharded DTensors under FSDP: not checked there yet
        check_finite_lora(model, f"{checkpoint / ADAPTER_FILE}")
    optimizer.load_state_dict(dist.optimizer_state_to_load(payload["optimizer"], optimizer))
    schedule.load_state_dict(payload["schedule"])
    if scaler is not None and payload["scaler"] is not None:
        scaler.load_state_dict(payload["scaler"])
    state = state_from_payload(payload)
    rng = dist.resume_rank(payload, state, seed=seed)
    if rng is not None:
        set_rng_state(rng)
    return state


def print_summary(result, adapter_path: Path, device: torch.device, start_step: int = 0) -> None:
    """The end-of-run lines: run totals, then this session's steps, time, tokens and throughput; eval; the adapter."""
    state, final = result.state, result.last_eval
    tok_rate = result.input_tokens / max(result.train_seconds, 1e-9)
    say("-" * 60)
    if result.stopped_by == "time":
        say(f"stopped by --max-time after step {state.step}; continue with --resume latest")
    say(session_summary(state, start_step, result.train_seconds, result.input_tokens, tok_rate, peak_memory_mb(device)))
    if final is None:
        say("no evaluation: the dataset has no validation split (raise --val-fraction)")
    else:
        best = f"{state.best_eval_loss:.4f}" if state.best_eval_loss is not None else "n/a"
        say(f"final eval loss {final['loss']:.4f}, perplexity {final['ppl']:.2f}; best eval loss {best}")
    say(f"adapter: {adapter_path}  (last checkpoint: {result.last_checkpoint})")


def sample_prompt_for(cfg: TrainConfig, tokenizer, prepared) -> list[int]:
    """Token ids of the sample prompt: --sample-prompt as a user turn in the run's template (raw text for
    plain-text data), else the prompt part of the first validation example."""
    if cfg.sample_prompt:
        if prepared.report.shape == "text":
            return tokenizer.encode(cfg.sample_prompt)
        return tokenizer.encode(
            data.render_prompt(prepared.template, [{"role": "user", "content": cfg.sample_prompt}], tokenizer)
        )
    example = (prepared.val or prepared.train)[0]
    prompt = []
    for token, target in zip(example.input_ids, example.targets):
        prompt.append(token)
        if target != IGNORE_INDEX:  # the first supervised prediction starts right after this token
            break
    return prompt


def print_sample(cfg: TrainConfig, model, tokenizer, prepared, precision: Precision) -> None:
    """Generate a short greedy continuation and print it."""
    prompt_ids = sample_prompt_for(cfg, tokenizer, prepared)
    with precision.autocast():
        (new_ids,) = phi_models.generate(
            model, [prompt_ids], max_new_tokens=cfg.sample_tokens, stop_ids=tokenizer.stop_token_ids, seed=cfg.seed
        )
    say("sample prompt: " + tokenizer.decode(prompt_ids, skip_special_tokens=False)[-300:].replace("\n", "\\n"))
    reply = tokenizer.decode(new_ids, skip_special_tokens=True)
    say("sample reply : " + (empty_reply_note(list(new_ids), reply, tokenizer) or reply.replace("\n", "\\n")))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse ``argv`` (default ``sys.argv[1:]``), run, and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The packages' own error classes carry messages written for the user: print them, no traceback.
    errors = (TrainingError, LoRAError, PhiModelError, HubError, DataError)
    try:
        # Installed before any loading; during the training steps the loop's handler takes SIGTERM over.
        with sigterm_exits():
            cfg = parse_config(argv)
            with open_distributed(cfg) as dist:  # a single process unless started by torchrun
                return run(cfg, dist)
    except errors as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:  # a full disk, an unwritable or unreadable path: say which, no traceback
        print(f"error: {describe_os_error(err)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one while stopping
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_CODES["SIGINT"]
    except Terminated as stop:
        print(stop.message, file=sys.stderr, flush=True)
        return stop.code
    finally:
        release_run_locks()


if __name__ == "__main__":  # `python -m training.run ...` is `python train.py ...`
    sys.exit(main())
