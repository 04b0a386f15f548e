"""Training step: philora against transformers + peft on the same checkpoint, batches and LoRA.

One random checkpoint of the chosen width (``--shape phi-2|phi-3-mini``, ``--layers`` layers, the real
vocab) is written by transformers' ``save_pretrained``; each side then runs in its own process, the
sides alternating for ``--rounds`` rounds, and the table shows medians over rounds of each round's
median step. Batches are ``--batch`` x ``--seq`` random tokens whose first ``--prompt-fraction`` of
positions are a masked prompt (label -100), as in instruction tuning.

- philora: ``phi_models.from_pretrained`` + ``lora_core.inject`` as train.py builds them, and the loop's
  own ``accumulate_window`` + ``optimizer_step`` (the lm_head only at target positions).
- transformers + peft: ``from_pretrained`` (nf4: ``BitsAndBytesConfig``) + ``get_peft_model`` with the
  same ``LoraConfig``; ``model(input_ids, labels=labels).loss``; the same AdamW and clipping.

``--dtype``: ``bf16`` (bf16 base, bf16 autocast, fp32 LoRA), ``nf4`` (4-bit base, bf16 compute) or
``fp32`` (everything fp32, no autocast). ``--loss-path equal`` takes our loss-path lead away: fp32 master
weights under bf16 autocast on both sides and full logits on ours too, so what remains is the kernels.

Model FLOP utilization counts useful FLOPs only: 4 x layer parameters x tokens (forward and the
activation gradients of a frozen base; LoRA's own FLOPs are left out) plus 4 x hidden x vocab per
*target* token for the head, over the FLOP/s of a square matmul in the compute dtype measured in the
same process. Peak memory is the process's VmHWM (CUDA: max allocated). Not a test.

    python bench/bench_train.py [--shape phi-2] [--layers 2] [--dtype bf16] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (bench/ is not a package)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(harness.SHAPES), default="phi-2")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dtype", choices=["bf16", "nf4", "fp32"], default="bf16")
    p.add_argument("--loss-path", choices=["own", "equal"], default="own", help="equal: full logits on both sides")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--prompt-fraction", type=float, default=0.5, help="leading positions masked out of the loss")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="processes per side, alternating; medians over them")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--compile", action="store_true", help="philora: torch.compile each layer (--compile)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", choices=["philora", "hf"], help="run one side only")
    p.add_argument("--profile", action="store_true", help="after the table, torch.profiler's op table of one step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- parent


def worker_options(args) -> dict:
    keys = ("shape", "layers", "dtype", "loss_path", "batch", "seq", "prompt_fraction", "warmup", "steps")
    keys += ("r", "alpha", "dropout", "device", "dir", "compile")
    return {key: getattr(args, key) for key in keys}


def summary(args, results: dict[str, list[dict]]) -> str:
    names = {"philora": "philora", "hf": "transformers + peft"}
    rows = []
    for side, rounds in results.items():
        rows.append(
            [
                names[side],
                f"{harness.median(rounds, 'tokens_per_s'):,.0f}",
                f"{harness.median(rounds, 'step_s'):.3f}",
                f"{harness.median(rounds, 'mfu'):.2f}",
                f"{harness.median(rounds, 'peak_mib'):,.0f}",
                f"{harness.median(rounds, 'first_loss'):.4f}",
            ]
        )
    if len(results) == 2:
        ours, theirs = results["philora"], results["hf"]
        ratio = lambda key: harness.median(ours, key) / harness.median(theirs, key)  # noqa: E731
        rows.append(
            ["**philora / hf**", f"**{ratio('tokens_per_s'):.2f}x**", "", "", f"**{ratio('peak_mib'):.2f}x**", ""]
        )
    first = next(iter(results.values()))[0]
    spec = harness.SHAPES[args.shape]
    head = (
        f"{args.shape} width ({spec['hidden']}, vocab {spec['vocab']}), {args.layers} layers, {args.dtype} "
        f"base, loss path {args.loss_path}, batch {args.batch}x{args.seq} with {args.prompt_fraction:.0%} "
        f"masked prompt, LoRA r={args.r} on {','.join(harness.TARGETS[spec['family']])}; {args.warmup} warm-up "
        f"+ {args.steps} timed steps, median of {args.rounds} rounds; {args.device}\n"
        f"{first['machine']}; matmul peak {first['peak_tflops']:.2f} TFLOP/s ({first['peak_dtype']})\n\n"
    )
    table = harness.markdown_table(
        ["implementation", "tokens/s", "step s", "MFU", "peak MiB", "first loss"],
        rows,
    )
    return head + table


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    with harness.checkpoint(args.shape, args.layers) as directory:
        args.dir = str(directory)
        sides = ["philora", "hf"] if not args.only else [args.only]
        argvs = {side: harness.worker_argv(__file__, side, **worker_options(args)) for side in sides}
        results = harness.alternate(argvs, args.rounds)
        print(summary(args, results))
        if args.profile:
            for side in sides:
                profiled = harness.run_worker([*argvs[side], "--profile"])
                print(f"\n{side}: torch.profiler, one step, top ops by self CPU time\n\n{profiled['profile']}")


# ---------------------------------------------------------------------------- workers


def make_batches(args, vocab: int, count: int):
    """``count`` batches: random ids; labels -100 over the masked prompt (HF convention: unshifted)."""
    import torch

    gen = torch.Generator().manual_seed(1)
    prompt = int(args.seq * args.prompt_fraction)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
        labels = ids.clone()
        labels[:, :prompt] = -100
        batches.append((ids, labels))
    return batches


def philora_batch(ids, labels, device):
    """Our batch contract: targets already shifted by one, -100 where nothing is predicted."""
    import torch

    targets = torch.full_like(ids, -100)
    targets[:, :-1] = labels[:, 1:]
    return {"input_ids": ids.to(device), "targets": targets.to(device)}


def build_philora(args, directory: Path, family: str):
    import torch

    import lora_core
    import phi_models

    kwargs = {"quantize": "nf4"} if args.dtype == "nf4" else {}
    dtype = torch.float32 if args.dtype == "fp32" or args.loss_path == "equal" else torch.bfloat16
    model = phi_models.from_pretrained(str(directory), dtype=dtype, device=args.device, **kwargs)
    lora_core.inject(model, targets=harness.TARGETS[family], r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout)
    lora_core.mark_only_lora_as_trainable(model)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if args.compile:
        model.compile_layers()  # compiled during the untimed warm-up steps
    return model.train()


def build_hf(args, directory: Path, family: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if args.dtype == "nf4":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), quantization_config=quant, dtype=torch.bfloat16, device_map=args.device
        )
    else:
        dtype = torch.float32 if args.dtype == "fp32" or args.loss_path == "equal" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype).to(args.device)
    config = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=harness.TARGETS[family],
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config).train()


def worker(args) -> None:
    import torch
    import torch.nn.functional as F

    directory = Path(args.dir)
    spec = harness.SHAPES[args.shape]
    family = spec["family"]
    side = args.worker
    harness.reset_peak_rss()
    model = (build_philora if side == "philora" else build_hf)(args, directory, family)
    params = [p for p in model.parameters() if p.requires_grad]
    n_layer_params = layer_param_count(spec, args.layers)  # from the shape: 4-bit packing must not change it
    compute_dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype != "fp32")
    batches = make_batches(args, spec["vocab"], args.warmup + args.steps)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)  # what build_optimizer picks

    if side == "philora":
        from philora.training.loop import accumulate_window, optimizer_step
        from philora.training.precision import Precision

        precision = Precision("fp32" if args.dtype == "fp32" else "bf16", torch.device(args.device))

        if args.loss_path == "equal":

            def step(ids, labels) -> float:
                batch = philora_batch(ids, labels, args.device)
                with autocast:
                    logits = model(batch["input_ids"])
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
                loss.backward()
                optimizer_step(params, optimizer, None, 1.0)
                return loss.item()
        else:

            def step(ids, labels) -> float:
                loss, _ = accumulate_window(model, [philora_batch(ids, labels, args.device)], precision=precision)
                optimizer_step(params, optimizer, None, 1.0)
                return loss
    else:

        def step(ids, labels) -> float:
            with autocast:
                loss = model(input_ids=ids.to(args.device), labels=labels.to(args.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

    if "--profile" in sys.argv:
        for ids, labels in batches[: args.warmup]:
            step(ids, labels)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step(*batches[-1])
        harness.emit({"profile": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)})
        return

    losses = []
    batch_iter = iter(batches)

    def next_step():
        ids, labels = next(batch_iter)
        losses.append(step(ids, labels))

    times = harness.timed(next_step, args.warmup, args.steps, args.device)
    step_s = statistics.median(times)
    tokens = args.batch * args.seq
    target_tokens = args.batch * (args.seq - int(args.seq * args.prompt_fraction) - 1)
    useful_flops = 4 * n_layer_params * tokens + 4 * spec["hidden"] * spec["vocab"] * target_tokens
    peak = harness.matmul_peak_flops(compute_dtype, args.device)
    harness.emit(
        {
            "tokens_per_s": tokens / step_s,
            "step_s": step_s,
            "mfu": useful_flops / step_s / peak,
            "peak_tflops": peak / 1e12,
            "peak_dtype": str(compute_dtype).removeprefix("torch."),
            "peak_mib": harness.peak_memory_mib(args.device),
            "first_loss": losses[0],
            "machine": harness.machine_line(),
        }
    )


def layer_param_count(spec: dict, layers: int) -> int:
    """Weights of ``layers`` decoder layers of this shape (attention + MLP matrices; norms and biases are noise)."""
    hidden, inter = spec["hidden"], spec["intermediate"]
    head_dim = hidden // spec["heads"]
    attention = hidden * (hidden + 2 * spec["kv_heads"] * head_dim) + hidden * hidden
    mlp = (2 if spec["family"] == "phi" else 3) * hidden * inter
    return layers * (attention + mlp)


if __name__ == "__main__":
    main()
