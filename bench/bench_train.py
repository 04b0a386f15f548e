"""Benchmark LoRA training steps: philora against transformers + peft, same checkpoint, same batches.

Builds ONE random phi-2-shaped checkpoint with transformers (``PhiForCausalLM(config).save_pretrained``),
writes the batches to a file, then runs each implementation in its own subprocess (so peak RSS is
per implementation) with identical settings: bf16 base, bf16 autocast, fp32 LoRA factors
(r, alpha, dropout) on q_proj, k_proj, v_proj, dense, fc1, fc2, fused AdamW, grad clipping 1.0.

- philora: ``phi_models.from_pretrained(dir, dtype=bf16)`` + ``lora_core.inject`` (as training/run.py
  does) and the training loop's own step, ``training.loop.accumulate_window`` + ``optimizer_step``.
- transformers + peft: ``PhiForCausalLM.from_pretrained(dir, dtype=bf16)`` + ``get_peft_model``
  with the same LoraConfig; loss from ``model(input_ids, labels=input_ids)`` under the same autocast.

Warm-up steps are excluded; the median of the timed steps is reported. ``--check`` first verifies
that both stacks give the same initial loss on the first batch (LoRA B starts at zero, so this is the
base model's loss; bf16 tolerance) and the same number of trainable parameters. Not a test.

    python bench/bench_train.py [--hidden 1024 --layers 6 --vocab 51200 --batch 4 --seq 256]
                                [--warmup 2 --steps 6 --threads N --check --rounds 1]

Memory columns: ``imports`` = resident set once the implementation's packages are imported (before any
model), ``after load`` = resident set right after the base model is loaded (before LoRA and training),
``peak`` = the process's RSS high-water mark (``ru_maxrss``) over imports + load + training. Both stacks
memory-map the safetensors file, so "after load" counts only the weight pages touched so far.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=51200)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each implementation this many times, alternating; report the round with the best median",
    )
    p.add_argument("--only", choices=["philora", "hf"], help="run one implementation only")
    p.add_argument("--check", action="store_true", help="first verify equal initial loss and trainable counts")
    p.add_argument("--keep", help="write the checkpoint and batches here (kept) instead of a temp dir")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: philora | hf | check-philora | check-hf
    p.add_argument("--dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- parent


def write_checkpoint(args, directory: Path) -> None:
    """A random phi-2-shaped PhiForCausalLM saved by transformers (bf16 safetensors) + the batches."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    head_dim = args.hidden // args.heads  # phi-2: 80, of which 32 rotary dims; keep 32 rotary dims here
    config = PhiConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        partial_rotary_factor=32 / head_dim,
        max_position_embeddings=max(2048, args.seq),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        hidden_act="gelu_new",
        tie_word_embeddings=False,
    )
    model = PhiForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    gen = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen) for _ in range(args.warmup + args.steps)
    ]
    torch.save(batches, directory / "batches.pt")


def run_worker(args, kind: str, directory: Path) -> dict:
    argv = [sys.executable, __file__, "--worker", kind, "--dir", str(directory)]
    for name in (
        "hidden",
        "layers",
        "heads",
        "vocab",
        "batch",
        "seq",
        "warmup",
        "steps",
        "r",
        "alpha",
        "dropout",
        "lr",
        "threads",
    ):
        argv += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(argv, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{kind} worker failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def check(args, directory: Path) -> None:
    ours, theirs = run_worker(args, "check-philora", directory), run_worker(args, "check-hf", directory)
    diff = abs(ours["loss"] - theirs["loss"])
    print(
        f"check: initial loss philora {ours['loss']:.5f}  transformers+peft {theirs['loss']:.5f}  "
        f"|diff| {diff:.2e}; trainable params {ours['trainable']:,} vs {theirs['trainable']:,}"
    )
    # bf16 matmuls with different fusion (qkv in one matmul, chunked head): ~1e-2 relative is bf16's noise.
    if diff > 2e-2 * max(1.0, abs(theirs["loss"])) or ours["trainable"] != theirs["trainable"]:
        sys.exit("check FAILED: the two stacks do not compute the same model/LoRA")


def table(args, results: dict) -> str:
    import peft
    import torch
    import transformers

    mb = lambda kb: f"{kb / 1024:,.0f} MB"  # noqa: E731
    rows = [
        "| implementation | tokens/s (median) | step s (median) | imports | after load | peak RSS | first loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"philora": "philora", "hf": "transformers + peft"}
    for kind, res in results.items():
        rows.append(
            f"| {names[kind]} | {res['tokens_per_s']:,.0f} | {res['step_s']:.3f} | "
            f"{mb(res['rss_imports_kb'])} | {mb(res['rss_after_load_kb'])} | {mb(res['peak_rss_kb'])} | "
            f"{res['first_loss']:.4f} |"
        )
    if len(results) == 2:
        ours, theirs = results["philora"], results["hf"]
        rows.append(
            f"| **philora / hf** | **{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x** | | | "
            f"{ours['rss_after_load_kb'] / theirs['rss_after_load_kb']:.2f}x | "
            f"**{ours['peak_rss_kb'] / theirs['peak_rss_kb']:.2f}x** | |"
        )
    threads = next(iter(results.values()))["threads"]
    head = (
        f"hidden {args.hidden}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}, "
        f"batch {args.batch}x{args.seq}, bf16, LoRA r={args.r} alpha={args.alpha:g} dropout={args.dropout:g} "
        f"on {','.join(TARGETS)}, AdamW; {args.warmup} warm-up + {args.steps} timed steps\n"
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"{threads} threads\n"
    )
    return head + "\n".join(rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        directory = Path(args.keep or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        write_checkpoint(args, directory)
        if args.check:
            check(args, directory)
        kinds = [args.only] if args.only else ["philora", "hf"]
        best: dict = {}
        for _ in range(args.rounds):
            for kind in kinds:
                res = run_worker(args, kind, directory)
                if kind not in best or res["tokens_per_s"] > best[kind]["tokens_per_s"]:
                    best[kind] = res
        print(table(args, best))


# ---------------------------------------------------------------------------- workers


def rss_kb() -> int:
    """Current resident set size in KiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load_philora(args, directory: Path):
    """The model and trainable params exactly as training/run.py builds them (load, inject, fp32 LoRA)."""
    import torch

    import lora_core
    import phi_models

    model = phi_models.from_pretrained(str(directory), dtype=torch.bfloat16)
    after_load = rss_kb()
    lora_core.inject(model, targets=TARGETS, r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout)
    lora_core.mark_only_lora_as_trainable(model)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    model.train()
    return model, after_load


def load_hf(args, directory: Path):
    """transformers PhiForCausalLM in bf16 + peft LoRA (peft keeps adapter weights in fp32 by default)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PhiForCausalLM

    model = PhiForCausalLM.from_pretrained(str(directory), dtype=torch.bfloat16)
    after_load = rss_kb()
    config = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.train()
    return model, after_load


def philora_batch(ids):
    """The batch contract: targets already shifted, -100 at the last position (nothing to predict)."""
    import torch

    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    return {"input_ids": ids, "targets": targets, "attention_mask": torch.ones_like(ids)}


def worker(args) -> None:
    import resource
    import time

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    directory = Path(args.dir)
    batches = torch.load(directory / "batches.pt")
    kind = args.worker.removeprefix("check-")
    if kind == "philora":
        import lora_core  # noqa: F401,E401
    else:
        import peft  # noqa: F401,E401
    rss_imports = rss_kb()
    torch.manual_seed(0)
    model, after_load = (load_philora if kind == "philora" else load_hf)(args, directory)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731  (train.py's bf16 mode)

    if args.worker.startswith("check-"):
        with torch.no_grad(), autocast():
            if kind == "philora":
                from philora.training.loop import micro_batch_loss
                from philora.training.loss import count_targets

                batch = philora_batch(batches[0])
                loss = float(micro_batch_loss(model, batch, 256)) / count_targets(batch["targets"])
            else:
                loss = float(model(input_ids=batches[0], labels=batches[0]).loss)
        print("RESULT " + json.dumps({"loss": loss, "trainable": sum(p.numel() for p in params)}))
        return

    if kind == "philora":
        from philora.training.loop import accumulate_window, optimizer_step
        from philora.training.optim import build_optimizer
        from philora.training.precision import Precision

        precision = Precision("bf16", torch.device("cpu"))
        optimizer = build_optimizer(params, name="adamw", lr=args.lr)

        def step(ids) -> float:
            loss, _ = accumulate_window(model, [philora_batch(ids)], precision=precision)
            optimizer_step(params, optimizer, None, 1.0)
            return loss
    else:
        optimizer = torch.optim.AdamW(params, lr=args.lr, fused=True)  # what build_optimizer picks on CPU

        def step(ids) -> float:
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss  # transformers shifts the labels itself
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

    times, losses = [], []
    for i, ids in enumerate(batches):
        start = time.perf_counter()
        losses.append(step(ids))
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    print(
        "RESULT "
        + json.dumps(
            {
                "tokens_per_s": args.batch * args.seq / step_s,
                "step_s": step_s,
                "step_times": times,
                "rss_imports_kb": rss_imports,
                "rss_after_load_kb": after_load,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for the packages
    main()
