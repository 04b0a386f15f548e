"""``philora export RUN --out DIR``: the run's adapter in PEFT's format (or as philora's own file)."""

from __future__ import annotations

import argparse
import shutil

from philora.commands.common import CommandError, fail, fresh_out_dir, user_errors
from philora.deploy.export_formats import FORMATS as DEPLOY_FORMATS

FORMATS = ("peft", "philora", *DEPLOY_FORMATS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora export``."""
    parser.add_argument("target", help="a run directory (the --output-dir of philora train), or a model with --adapter")
    parser.add_argument(
        "--out",
        default=None,
        help="new (or empty) directory to write (a new file for gguf-lora/gguf; not used by vllm)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="peft",
        help="peft: adapter_config.json + adapter_model.safetensors (transformers + peft, vLLM); "
        "philora: adapter.safetensors for --adapter; gguf-lora/gguf/ollama/vllm: see docs/deploy.md",
    )
    parser.add_argument(
        "--adapter", default=None, help="adapter file or PEFT directory to use instead of the run's own"
    )
    parser.add_argument("--device", default="cpu", help="device to load the model on")
    from philora.deploy.export_formats import add_arguments as add_deploy_arguments

    add_deploy_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Export; returns the exit code."""
    try:
        return _export(args)
    except user_errors() as err:
        return fail(str(err))


def _export(args) -> int:
    import lora_core
    import phi_models
    from philora.runs import is_run_dir, load_for_inference

    if args.out is None and args.format != "vllm":
        raise CommandError(f"--format {args.format} needs --out")
    if args.format in DEPLOY_FORMATS:
        from philora.deploy.export_formats import export

        return export(args)
    if not is_run_dir(args.target) and args.adapter is None:
        raise CommandError(
            f"{args.target}: not a run directory (no train_config.yaml); pass a run directory, "
            f"or a model together with --adapter"
        )
    out = fresh_out_dir(args.out)
    loaded = load_for_inference(args.target, adapter=args.adapter, device=args.device)
    run_info = loaded.run
    base = run_info.base_model if run_info else str(args.target)
    revision = run_info.revision if run_info else None
    if args.format == "peft":
        phi_models.export_peft_adapter(loaded.model, out, base_model_name_or_path=base, revision=revision)
        print(
            f"PEFT adapter written to {out}: peft.PeftModel.from_pretrained(AutoModelForCausalLM."
            f"from_pretrained('{base}'), '{out}')"
        )
    else:
        out.mkdir(parents=True, exist_ok=True)
        if run_info is not None and args.adapter is None:
            shutil.copyfile(run_info.adapter_file, out / "adapter.safetensors")
        else:
            lora_core.save_adapter(
                loaded.model, out / "adapter.safetensors", config=dict(loaded.model.lora_core_config, base_model=base)
            )
        print(f"philora adapter written to {out / 'adapter.safetensors'}")
    return 0
