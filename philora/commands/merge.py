"""``philora merge RUN --out DIR``: the base with the adapter folded in, as a Hugging Face checkpoint."""

from __future__ import annotations

import argparse

from philora.commands.common import CommandError, fail, fresh_out_dir, user_errors

DTYPES = ("auto", "fp32", "bf16", "fp16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora merge``."""
    parser.add_argument("target", help="a run directory, or a model with --adapter")
    parser.add_argument("--out", required=True, help="new (or empty) directory for the merged checkpoint")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="stored dtype; auto: the base's dtype (fp32 for a 4-bit base)"
    )
    parser.add_argument(
        "--adapter", default=None, help="adapter file or PEFT directory to use instead of the run's own"
    )
    parser.add_argument("--device", default="cpu", help="device to load the model on")


def run(args: argparse.Namespace) -> int:
    """Merge and write; returns the exit code."""
    try:
        return _merge(args)
    except user_errors() as err:
        return fail(str(err))


def _merge(args) -> int:
    import phi_models
    from philora.runs import is_run_dir, load_for_inference

    if not is_run_dir(args.target) and args.adapter is None:
        raise CommandError(
            f"{args.target}: not a run directory (no train_config.yaml); pass a run directory, "
            f"or a model together with --adapter"
        )
    out = fresh_out_dir(args.out)
    dtype = None if args.dtype == "auto" else args.dtype
    loaded = load_for_inference(args.target, adapter=args.adapter, device=args.device)
    run_info = loaded.run
    base = run_info.base_model if run_info else str(args.target)
    revision = run_info.revision if run_info else None
    info = {
        "template": loaded.template,
        "stop_token_ids": list(loaded.tokenizer.stop_token_ids),
        "adapter": str(args.adapter or (run_info.adapter_file if run_info else "")),
        "run": str(run_info.path) if run_info else None,
    }
    if run_info is not None and run_info.quantize:
        info["quantized_base"] = run_info.quantize
        info["difference_vs_dense_merge"] = _report_4bit_difference(loaded, args, dtype)
    phi_models.export_merged(
        loaded.model,
        out,
        dtype,
        base_model=base,
        revision=revision,
        stop_token_ids=info["stop_token_ids"],
        extra_info=info,
    )
    print(f"merged checkpoint written to {out}: AutoModelForCausalLM.from_pretrained('{out}')")
    return 0


def _report_4bit_difference(loaded, args, dtype) -> dict:
    """Merge the same adapter into the dense base too, and print how far the 4-bit merge is from it."""
    import torch

    from phi_models.export_merged import merged_tensors
    from philora.runs import load_for_inference

    dense = load_for_inference(args.target, adapter=args.adapter, quantize="none", device=args.device).model
    worst, worst_key, sq_diff, sq_ref = 0.0, None, 0.0, 0.0
    for (key, q), (_, d) in zip(merged_tensors(loaded.model, torch.float32), merged_tensors(dense, torch.float32)):
        diff = (q - d).abs()
        if diff.numel() and float(diff.max()) > worst:
            worst, worst_key = float(diff.max()), key
        sq_diff += float(diff.pow(2).sum())
        sq_ref += float(d.pow(2).sum())
    relative = (sq_diff / sq_ref) ** 0.5 if sq_ref else 0.0
    print(
        f"note: the base was trained in 4 bits ({loaded.run.quantize}); the export dequantizes it. Against merging "
        f"into the dense base: max |difference| {worst:.4g} (at {worst_key}), relative Frobenius {relative:.4g}"
    )
    del dense
    return {"max_abs": worst, "max_abs_key": worst_key, "relative_frobenius": relative}
