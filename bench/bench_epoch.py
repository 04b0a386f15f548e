"""Benchmark one realistic training epoch: philora's defaults against transformers + peft as the tutorials run it.

The data is the bundled roleplay sample (``data/samples/roleplay``) prepared by ``philora.data.prepare`` with the
tiny tokenizer (``--data``/``--tokenizer`` take any source and tokenizer train.py accepts). The sample's
conversations are short and alike: 159-229 tokens with the tiny tokenizer (200-276 with phi-2's), about 900
bytes each, where the full hieunguyenminh/roleplay averages about 2,600 bytes per row (its dataset card), so
real conversations run roughly three times longer; ``--data roleplay --tokenizer microsoft/phi-2`` runs the
real thing where the hub is reachable. The parent prepares the examples once and hands the same token ids,
loss masks and validation split to both sides.

Both sides train the same random checkpoint (``harness.write_checkpoint``: phi-2 width, 2 layers, bf16 base)
under bf16 autocast with fp32 LoRA factors (r 16, alpha 32, dropout 0.05 on the family's TARGETS), fused
AdamW at train.py's default lr, cosine schedule with 3% warmup, gradient clipping 1.0, one epoch:

- philora, as ``python train.py`` runs by default (``TrainConfig`` defaults, ``--lora-alpha 32``): batches
  from ``philora.data.make_batches`` (packing rows of up to max_seq_len tokens, padded to a multiple of 64),
  LoRA by ``training.run.add_lora``, and the loop's own step (``accumulate_window`` with the targets-only
  lm_head, ``optimizer_step``, the non-finite check, ``LRSchedule``).
- transformers + peft, as ``Trainer(group_by_length=True, bf16=True)`` with
  ``DataCollatorForSeq2Seq(padding=True, label_pad_token_id=-100)`` runs it, written as a plain loop:
  ``AutoModelForCausalLM.from_pretrained`` + ``get_peft_model``, one example per row in the batch order of
  transformers' own ``get_length_grouped_indices``, each batch right-padded to its longest row, labels -100
  on prompt and pad tokens, ``model(input_ids, attention_mask, labels).loss``, ``AdamW(fused=True)`` (the
  Trainer's default on torch >= 2.8), ``get_cosine_schedule_with_warmup``.

- philora, matched steps: the same with ``--batch-size`` set so that a step's packed rows hold about as many
  examples as hf's batch (train.py's default packs about five times as many into a step, so it takes a fifth of
  the optimizer steps and ends an epoch at a higher loss): the row to compare losses with.

Columns: wall time of the epoch (building the batches included, loading not), real (non-pad) tokens per
second, optimizer steps, the share of pad positions, the mean training loss over the last quarter of the
steps, the validation loss after the epoch (each side's own evaluation on the same examples) and the
process's peak resident set (VmHWM). Each side runs in its own process, sides alternating, median over
``--rounds``. Not a test.

    python bench/bench_epoch.py [--shape phi-2 --layers 2 --examples 64 --rounds 3]
    python bench/bench_epoch.py --shape phi-2-tiny --examples 40 --rounds 1      # a quick sanity run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for the packages

import harness  # noqa: E402  (bench/ is the script's own folder)

SIDES = {"philora": "philora", "philora-matched": "philora, matched steps", "hf": "transformers + peft"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="phi-2", choices=sorted(harness.SHAPES))
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--data", default="samples/roleplay", help="any --data source train.py accepts")
    p.add_argument("--tokenizer", default="tiny", help="tokenizer for --data (its ids must fit the shape's vocab)")
    p.add_argument("--examples", type=int, default=64, help="use at most N training examples (the sample has 230)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=3, help="runs per side, alternating; the table shows medians")
    p.add_argument("--keep", type=Path, help="keep the checkpoint under this folder and reuse it (harness.checkpoint)")
    p.add_argument("--worker", choices=sorted(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)  # philora-matched's packed rows per step
    p.add_argument("--dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- parent


def prepare_work(args, checkpoint: Path, directory: Path) -> dict:
    """The examples and train.py's settings for ``checkpoint``, written to ``directory`` for both workers."""
    import phi_models
    from philora import data
    from philora.training.config import TrainConfig

    spec = harness.SHAPES[args.shape]
    cfg = TrainConfig(lora_r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout)
    if cfg.schedule != "cosine" or cfg.optimizer != "adamw" or cfg.grad_accum != 1:
        sys.exit("bench_epoch mirrors train.py's cosine AdamW without accumulation; update the hf side first")
    tokenizer = phi_models.load_tokenizer(args.tokenizer)
    prepared = data.prepare(
        args.data, tokenizer, max_seq_len=cfg.max_seq_len, val_fraction=cfg.val_fraction, seed=cfg.seed
    )
    train = prepared.train[: args.examples]
    largest = max(max(e.input_ids) for e in train + prepared.val)
    if largest >= spec["vocab"]:
        sys.exit(f"--tokenizer {args.tokenizer} gives id {largest}, outside the {args.shape} vocab ({spec['vocab']})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    mean_length = sum(len(e.input_ids) for e in train) / len(train)
    work = {
        # Packed rows per step that hold about as many examples as hf's batch of cfg.batch_size rows, so
        # both sides take about as many optimizer steps and their losses can be compared.
        "matched_batch_size": max(1, round(cfg.batch_size * mean_length / cfg.max_seq_len)),
        "model": str(checkpoint),
        "family": spec["family"],
        "config": dataclasses.asdict(cfg),
        "pad_id": pad_id,
        "train": [[e.input_ids, e.targets] for e in train],
        "val": [[e.input_ids, e.targets] for e in prepared.val],
        "template": prepared.template,
    }
    (directory / "work.json").write_text(json.dumps(work))
    return work


def table(args, work: dict, results: dict[str, list[dict]]) -> str:
    """The markdown table of medians, with the philora / hf ratio row."""
    cfg = work["config"]
    lengths = [len(ids) for ids, _ in work["train"]]
    med = {side: {key: harness.median(runs, key) for key in runs[0]} for side, runs in results.items()}
    rows = []
    for side, m in med.items():
        rows.append(
            [
                SIDES[side] + (f" (--batch-size {work['matched_batch_size']})" if side == "philora-matched" else ""),
                f"{m['epoch_s']:.1f}",
                f"{m['tokens_per_s']:,.0f}",
                f"{m['steps']:.0f}",
                f"{m['pad_share']:.1%}",
                f"{m['final_loss']:.4f}",
                f"{m['val_loss']:.4f}",
                f"{m['peak_mib']:,.0f}",
            ]
        )
    theirs = med["hf"]
    for side in ("philora", "philora-matched"):
        ours = med[side]
        rows.append(
            [
                f"**{SIDES[side]} / hf**",
                f"**{theirs['epoch_s'] / ours['epoch_s']:.2f}x faster**",
                f"**{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x**",
                f"{ours['steps'] / theirs['steps']:.2f}x",
                "",
                f"{ours['final_loss'] - theirs['final_loss']:+.4f}",
                f"{ours['val_loss'] - theirs['val_loss']:+.4f}",
                f"**{ours['peak_mib'] / theirs['peak_mib']:.2f}x**",
            ]
        )
    spec = harness.SHAPES[args.shape]
    head = (
        f"{args.shape} width ({spec['hidden']}), {args.layers} layers, vocab {spec['vocab']}, bf16 base, bf16 "
        f"autocast; LoRA r={args.r} alpha={args.alpha:g} dropout={args.dropout:g} on "
        f"{','.join(harness.TARGETS[work['family']])}; AdamW lr {cfg['lr']:g}, cosine, warmup {cfg['warmup']:g}, "
        f"batch {cfg['batch_size']}\n"
        f"data {args.data} ({work['template']} template, tokenizer {args.tokenizer}): {len(lengths)} examples, "
        f"{sum(lengths):,} tokens, {min(lengths)}-{max(lengths)} per example; one epoch, median of {args.rounds} "
        f"round(s)\n{harness.machine_line()}\n\n"
    )
    headers = ["side", "epoch s", "tokens/s", "optimizer steps", "pad share", "final loss", "val loss", "peak MiB"]
    return head + harness.markdown_table(headers, rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        if args.worker == "hf":
            return run_hf(Path(args.dir))
        return run_philora(Path(args.dir), args.batch_size)
    with harness.checkpoint(args.shape, args.layers, keep=args.keep) as checkpoint:
        with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
            work = prepare_work(args, checkpoint, Path(tmp))
            sides = {side: harness.worker_argv(__file__, side, dir=tmp) for side in SIDES}
            sides["philora-matched"] += ["--batch-size", str(work["matched_batch_size"])]
            results = harness.alternate(sides, args.rounds)
        print(table(args, work, results))


# ---------------------------------------------------------------------------- workers


def load_work(directory: Path) -> dict:
    """The parent's work.json."""
    return json.loads((directory / "work.json").read_text())


def final_loss(losses: list[float]) -> float:
    """Mean training loss over the last quarter of the steps (at least one)."""
    tail = losses[-max(1, len(losses) // 4) :]
    return sum(tail) / len(tail)


def report(seconds: float, losses: list[float], real: int, padded: int, val_loss: float) -> None:
    """Emit one worker's result: the epoch took ``seconds``."""
    harness.emit(
        {
            "epoch_s": seconds,
            "tokens_per_s": real / seconds,
            "steps": len(losses),
            "pad_share": 1 - real / padded,
            "final_loss": final_loss(losses),
            "val_loss": val_loss,
            "peak_mib": harness.peak_memory_mib(),
        }
    )


def run_philora(directory: Path, batch_size: int | None = None) -> None:
    """One epoch the way train.py runs it by default (``batch_size``: its --batch-size instead)."""
    import torch

    import phi_models
    from philora.data import Example, make_batches
    from philora.training.config import TrainConfig
    from philora.training.finite import stop_if_weights_non_finite
    from philora.training.loop import accumulate_window, evaluate, optimizer_step, to_device
    from philora.training.optim import build_optimizer
    from philora.training.precision import Precision
    from philora.training.rng import seed_everything
    from philora.training.run import add_lora, plan_steps, resolve_targets, validation_batches
    from philora.training.schedule import LRSchedule, warmup_steps_for

    work = load_work(directory)
    cfg = TrainConfig(**work["config"])
    if batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=batch_size)
    train = [Example(ids, targets) for ids, targets in work["train"]]
    val = [Example(ids, targets) for ids, targets in work["val"]]
    device = torch.device("cpu")
    precision = Precision("bf16", device)
    seed_everything(cfg.seed)
    model = phi_models.from_pretrained(work["model"], dtype=torch.bfloat16, device=device)
    add_lora(cfg, model, resolve_targets(cfg, model.config))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    start = time.perf_counter()
    batches = make_batches(
        train,
        batch_size=cfg.batch_size,
        max_seq_len=cfg.max_seq_len,
        pad_id=work["pad_id"],
        packing=cfg.packing,
        shuffle=True,
        seed=cfg.seed,
        epoch=0,
        pad_to_multiple=cfg.pad_multiple,
    )
    total_steps = plan_steps(cfg, len(batches))
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
    losses = []
    for index in range(0, len(batches), cfg.grad_accum):  # fit()'s step, without its logging and checkpoints
        window = [to_device(b, device) for b in batches[index : index + cfg.grad_accum]]
        loss, _ = accumulate_window(model, window, precision=precision, chunk=cfg.loss_chunk)
        optimizer_step(params, optimizer, None, cfg.max_grad_norm)
        stop_if_weights_non_finite(model, len(losses) + 1, None)
        schedule.step()
        losses.append(loss)
    seconds = time.perf_counter() - start
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    val_batches = validation_batches(cfg, val, work["pad_id"])
    val_loss = evaluate(model, val_batches, precision=precision, chunk=cfg.loss_chunk)["loss"]
    report(seconds, losses, real, padded, val_loss)


def hf_batch(examples: list[list[list[int]]], pad_id: int) -> dict:
    """DataCollatorForSeq2Seq(padding=True, label_pad_token_id=-100): right-pad to the longest row.

    Labels are unshifted (transformers shifts them): ``labels[t + 1] = targets[t]``, so the same tokens carry
    the loss on both sides (-100 on the prompt, the pad and the first position).
    """
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids, attention, labels = [], [], []
    for ids, targets in examples:
        pad = width - len(ids)
        input_ids.append(ids + [pad_id] * pad)
        attention.append([1] * len(ids) + [0] * pad)
        labels.append([-100] + targets[:-1] + [-100] * pad)
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long)  # noqa: E731
    return {"input_ids": as_tensor(input_ids), "attention_mask": as_tensor(attention), "labels": as_tensor(labels)}


def hf_val_loss(model, examples: list, pad_id: int, batch_size: int, autocast) -> float:
    """Token-weighted mean loss over ``examples`` (the Trainer's evaluation, weighted by label tokens)."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = hf_batch(examples[start : start + batch_size], pad_id)
            count = int((batch["labels"][:, 1:] != -100).sum())
            with autocast():
                total += float(model(**batch).loss) * count
            tokens += count
    model.train()
    return total / max(tokens, 1)


def run_hf(directory: Path) -> None:
    """One epoch the way the transformers + peft tutorials run it (a plain loop for the Trainer's step)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup
    from transformers.trainer_pt_utils import get_length_grouped_indices

    work = load_work(directory)
    cfg = work["config"]
    train, pad_id = work["train"], work["pad_id"]
    torch.manual_seed(cfg["seed"])
    model = AutoModelForCausalLM.from_pretrained(work["model"], dtype=torch.bfloat16)
    lora = LoraConfig(
        r=cfg["lora_r"],
        lora_alpha=cfg["lora_alpha"],
        lora_dropout=cfg["lora_dropout"],
        target_modules=harness.TARGETS[work["family"]],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731  (Trainer's bf16=True)

    start = time.perf_counter()
    size = cfg["batch_size"]
    order = get_length_grouped_indices(
        [len(ids) for ids, _ in train], size, generator=torch.Generator().manual_seed(cfg["seed"])
    )
    batches = [hf_batch([train[i] for i in order[k : k + size]], pad_id) for k in range(0, len(order), size)]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg["lr"],
        betas=(cfg["adam_beta1"], cfg["adam_beta2"]),
        eps=cfg["adam_eps"],
        weight_decay=cfg["weight_decay"],
        fused=True,
    )
    warmup = cfg["warmup"] if cfg["warmup"] >= 1 else math.ceil(cfg["warmup"] * len(batches))  # warmup_ratio
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(warmup), len(batches))
    losses = []
    for batch in batches:
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    val_loss = hf_val_loss(model, work["val"], pad_id, cfg["eval_batch_size"], autocast)
    report(seconds, losses, real, padded, val_loss)


if __name__ == "__main__":
    main()
