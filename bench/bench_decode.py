"""Benchmark greedy decoding with the KV cache: philora against transformers ``generate``, and the bandwidth bound.

One random checkpoint (``harness.write_checkpoint``: phi-2 width, 4 layers, bf16 by default) and one random
PEFT LoRA adapter (r 16, alpha 32, the family's TARGETS, non-zero B so the adapter changes the output) are
written once; both sides load the same files and decode the same random prompts (``--prompt-len`` tokens,
all rows the same length, so no padding), exactly ``--new-tokens`` new tokens per row, at each batch size:

- philora: ``phi_models.from_pretrained`` + ``phi_models.attach_adapter`` (what ``philora generate`` loads), then
  ``phi_models.generate(model, prompts, max_new_tokens=N)`` (greedy, no stop ids).
- transformers + peft: ``AutoModelForCausalLM.from_pretrained`` + ``PeftModel.from_pretrained``, then
  ``model.generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)`` with its default cache.

Adapter modes: ``lora`` keeps the adapter unmerged (each step also runs the LoRA factors: the case of serving
several adapters on one base); ``merged`` folds it into the base (``lora_core.merge`` / peft's
``merge_and_unload``), so a step costs what the base model costs.

Tokens/s counts new tokens only, batch x N / the wall time of one ``generate`` call (its prefill of the short
prompt included), after one untimed call of ``--warmup-tokens`` tokens at the same batch size. The bound is
what reading memory allows: bytes one decoding step reads / the bandwidth ``harness.memory_bandwidth()``
measures in every worker of this run (median; the GPU's on ``--device cuda``), times the batch. The bytes
counted: every weight of the checkpoint but the embedding table (the layers, final norm and lm_head, in the
run's dtype; a step gathers only B rows of the embedding), the LoRA factors in fp32 when unmerged (both
stacks keep them in fp32), and the KV cache at the mean context of the run (prompt + (N - 1) / 2
positions). Activations are left out.
Each side runs in its own process per round, sides alternating, median over ``--rounds``. Not a test.

    python bench/bench_decode.py [--shape phi-2 --layers 4 --dtype bfloat16 --batches 1,8 --new-tokens 64]
    python bench/bench_decode.py --shape phi-2-tiny --layers 2 --rounds 1 --new-tokens 16   # a quick sanity run
    python bench/bench_decode.py --shape phi-2 --layers 32 --batch 1 --device cuda          # bench/gpu_check.sh
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for the packages

import harness  # noqa: E402  (bench/ is the script's own folder)

SIDES = {"philora": "philora", "hf": "transformers + peft"}
MODES = ("lora", "merged")
EMBEDDING = "model.embed_tokens.weight"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="phi-2", choices=sorted(harness.SHAPES))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--batches", "--batch", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--modes", default=",".join(MODES), help="adapter modes: lora (unmerged), merged")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--warmup-tokens", type=int, default=8, help="tokens of the untimed call before each timed one")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--rounds", type=int, default=3, help="runs per side, alternating; the table shows medians")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--keep", type=Path, help="keep the checkpoint under this folder and reuse it (harness.checkpoint)")
    p.add_argument("--worker", choices=sorted(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batches.split(",")]
    args.mode_list = [m for m in args.modes.split(",") if m]
    if not args.batch_sizes or min(args.batch_sizes) < 1 or any(m not in MODES for m in args.mode_list):
        p.error(f"--batches takes sizes >= 1 and --modes a subset of {','.join(MODES)}")
    return args


# ---------------------------------------------------------------------------- parent


def write_adapter(directory: Path, checkpoint: Path, family: str, args) -> None:
    """A random PEFT LoRA adapter for ``checkpoint`` (B drawn too, so the adapter is not a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=getattr(torch, args.dtype))
    config = LoraConfig(
        r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=harness.TARGETS[family], task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    model.save_pretrained(str(directory))


def tensor_bytes(path: Path, skip: str | None = None) -> int:
    """Bytes of the tensors of a safetensors file (``skip`` left out), as stored."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():
            if name != skip:
                tensor = handle.get_tensor(name)
                total += tensor.numel() * tensor.element_size()
    return total


def step_bytes(checkpoint: Path, directory: Path, args, spec: dict) -> dict:
    """Bytes one decoding step reads: base weights (no embedding table), LoRA factors, KV cache per row."""
    base = sum(tensor_bytes(path, EMBEDDING) for path in checkpoint.glob("*.safetensors"))
    lora = tensor_bytes(directory / "adapter" / "adapter_model.safetensors")  # fp32 on both sides
    element = 2 if args.dtype == "bfloat16" else 4
    head_dim = spec["hidden"] // spec["heads"]
    mean_context = args.prompt_len + (args.new_tokens - 1) / 2
    kv_per_row = 2 * args.layers * spec["kv_heads"] * head_dim * mean_context * element
    return {"base": base, "lora": lora, "kv_per_row": kv_per_row}


def table(args, spec: dict, sizes: dict, results: dict[str, list[dict]]) -> str:
    """One markdown table: both sides' medians per (mode, batch), their ratio and the bandwidth bound."""
    bandwidth = statistics.median(r["bandwidth"] for runs in results.values() for r in runs)
    matvec = statistics.median(r["matvec_bandwidth"] for runs in results.values() for r in runs)
    rows = []
    for mode in args.mode_list:
        for batch in args.batch_sizes:
            key = f"{mode}_b{batch}"
            ours = statistics.median(r["tokens_per_s"][key] for r in results["philora"])
            theirs = statistics.median(r["tokens_per_s"][key] for r in results["hf"])
            read = sizes["base"] + (sizes["lora"] if mode == "lora" else 0) + batch * sizes["kv_per_row"]
            bound = batch * bandwidth / read
            matvec_bound = batch * matvec / read
            rows.append(
                [
                    "unmerged LoRA" if mode == "lora" else "merged",
                    batch,
                    f"{ours:,.1f}",
                    f"{theirs:,.1f}",
                    f"**{ours / theirs:.2f}x**",
                    f"{read / 2**20:,.0f}",
                    f"{bound:,.1f}",
                    f"{ours / bound:.0%}",
                    f"{theirs / bound:.0%}",
                    f"{matvec_bound:,.1f}",
                    f"{ours / matvec_bound:.0%}",
                ]
            )
    first = [r["first_ids"] for r in (results["philora"][0], results["hf"][0])]
    agree = next((i for i, (a, b) in enumerate(zip(*first, strict=False)) if a != b), len(first[0]))
    head = (
        f"{args.shape} width ({spec['hidden']}), {args.layers} layers, vocab {spec['vocab']}, {args.dtype}; "
        f"PEFT LoRA r={args.r} alpha={args.alpha:g} on {','.join(harness.TARGETS[spec['family']])}; greedy, "
        f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per row; median of {args.rounds} round(s); "
        f"{args.device}\n"
        f"bound = batch x bandwidth / bytes read per step; bandwidth {bandwidth / 1e9:.1f} GB/s (sum over 1 GiB, "
        f"measured in each worker); bytes = weights but the embedding table, + fp32 LoRA factors when unmerged, "
        f"+ KV cache at the mean context. matvec bound: the same with the {matvec / 1e9:.1f} GB/s at which one "
        f"{args.dtype} (1, {spec['hidden']}) x ({spec['vocab']}, {spec['hidden']}) product reads its weight here. "
        f"Greedy ids of row 0 (first mode and batch) agree for "
        f"the first {agree} of {len(first[0])} tokens\n{harness.machine_line()}\n\n"
    )
    headers = [
        "adapter",
        "batch",
        "philora tokens/s",
        "hf tokens/s",
        "philora / hf",
        "MiB read per step",
        "bound tokens/s",
        "philora of bound",
        "hf of bound",
        "matvec bound tokens/s",
        "philora of matvec bound",
    ]
    return head + harness.markdown_table(headers, rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    spec = harness.SHAPES[args.shape]
    with (
        harness.checkpoint(args.shape, args.layers, args.dtype, keep=args.keep) as checkpoint,
        tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp,
    ):
        directory = Path(tmp)
        write_adapter(directory / "adapter", checkpoint, spec["family"], args)

        generator = torch.Generator().manual_seed(2)
        prompts = torch.randint(0, spec["vocab"], (max(args.batch_sizes), args.prompt_len), generator=generator)
        (directory / "prompts.json").write_text(json.dumps(prompts.tolist()))
        options = dict(
            dir=directory,
            model=checkpoint,
            device=args.device,
            dtype=args.dtype,
            batches=args.batches,
            modes=args.modes,
            new_tokens=args.new_tokens,
            warmup_tokens=args.warmup_tokens,
        )
        sides = {side: harness.worker_argv(__file__, side, **options) for side in SIDES}
        results = harness.alternate(sides, args.rounds)
        print(table(args, spec, step_bytes(checkpoint, directory, args, spec), results))


# ---------------------------------------------------------------------------- workers


def load_philora(args, dtype):
    """The model as ``philora generate --adapter`` loads it, and its generate(prompts, n) and merge()."""
    import lora_core
    import phi_models

    directory = Path(args.dir)
    model = phi_models.from_pretrained(args.model, dtype=dtype, device=args.device)
    phi_models.attach_adapter(model, directory / "adapter")
    model.eval()

    def generate(prompts, n: int) -> list[list[int]]:
        return phi_models.generate(model, prompts.tolist(), max_new_tokens=n)

    def merge() -> None:
        lora_core.merge(model)

    return generate, merge


def load_hf(args, dtype):
    """transformers + PeftModel.from_pretrained, and its generate(prompts, n) and merge_and_unload()."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
    holder = {"model": PeftModel.from_pretrained(base, str(Path(args.dir) / "adapter"))}  # merge() replaces it
    holder["model"].eval()

    def generate(prompts, n: int) -> list[list[int]]:
        out = holder["model"].generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=0,
        )
        return out[:, prompts.shape[1] :].tolist()

    def merge() -> None:
        holder["model"] = holder["model"].merge_and_unload()

    return generate, merge


def worker(args) -> None:
    import torch

    directory = Path(args.dir)
    prompts = torch.tensor(json.loads((directory / "prompts.json").read_text()), dtype=torch.long).to(args.device)
    generate, merge = (load_philora if args.worker == "philora" else load_hf)(args, getattr(torch, args.dtype))
    bandwidth = harness.memory_bandwidth(args.device)
    spec = harness.SHAPES[args.shape]
    matvec = harness.matvec_bandwidth(spec["vocab"], spec["hidden"], getattr(torch, args.dtype), args.device)
    tokens_per_s, first_ids = {}, None
    with torch.no_grad():
        for mode in args.mode_list:
            if mode == "merged":
                merge()
            for batch in args.batch_sizes:
                rows = prompts[:batch]
                generate(rows, args.warmup_tokens)
                harness.sync(args.device)
                start = time.perf_counter()
                new = generate(rows, args.new_tokens)  # host lists: the device has finished
                tokens_per_s[f"{mode}_b{batch}"] = batch * args.new_tokens / (time.perf_counter() - start)
                first_ids = first_ids or new[0]
    harness.emit(
        {"tokens_per_s": tokens_per_s, "bandwidth": bandwidth, "matvec_bandwidth": matvec, "first_ids": first_ids}
    )


if __name__ == "__main__":
    main()
