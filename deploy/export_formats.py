"""``philora export RUN --format gguf-lora|gguf|ollama|vllm``: the deploy formats of the export subcommand.

philora/commands/export.py owns the command; it adds :func:`add_arguments` and hands these formats to
:func:`export` (one function per format in :data:`EXPORTERS`).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from philora.deploy.errors import DeployError
from philora.deploy.gguf_common import GGUF_DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only the deploy formats use."""
    parser.add_argument(
        "--dtype",
        choices=GGUF_DTYPES,
        default=None,
        help="GGUF tensor type of the 2-D weights (default: f32 for gguf-lora, f16 for gguf/ollama)",
    )
    parser.add_argument("--base-only", action="store_true", help="gguf: write the base model without the adapter")
    parser.add_argument(
        "--merged", action="store_true", help="ollama: one merged model GGUF instead of base GGUF + adapter GGUF"
    )
    parser.add_argument("--system", default=None, help="ollama: SYSTEM prompt for the Modelfile (default: none)")
    parser.add_argument(
        "--name", default=None, help="model name in GGUF metadata / vLLM (default: the run's folder name)"
    )


def base_config(run):
    """The base model's PhiConfig, read from its config.json (no weights loaded)."""
    from phi_models.source import resolve_source

    return resolve_source(run.base_model, run.revision).config()


def tokenizer_dir(run) -> Path:
    """A local folder holding the base model's tokenizer files (fetched from the hub cache when needed)."""
    from phi_models.presets import tiny_tokenizer_path
    from phi_models.source import resolve_source

    source = resolve_source(run.tokenizer or run.base_model, run.revision)
    if source.kind == "tiny":
        return tiny_tokenizer_path().parent
    found = source.file("tokenizer.json")
    for optional in ("tokenizer_config.json", "tokenizer.model", "added_tokens.json", "special_tokens_map.json"):
        source.file(optional, required=False)  # brings them beside tokenizer.json in the hub cache
    return Path(found).parent


def _card_dir(run) -> Path | None:
    path = Path(run.base_model)
    return path if path.is_dir() else None


def _name(run, args) -> str:
    return args.name or Path(run.path).resolve().name


def export_gguf_lora(run, args, out: Path) -> str:
    """The run's adapter as a GGUF LoRA adapter file."""
    from lora_core import read_adapter
    from philora.deploy.gguf_lora import write_gguf_lora

    if args.adapter and Path(args.adapter).is_dir():
        raise DeployError(
            f"--adapter {args.adapter}: gguf-lora reads philora adapter files (.safetensors); for a PEFT "
            f"directory use --format gguf (merged) or llama.cpp's convert_lora_to_gguf.py"
        )
    tensors, config = read_adapter(args.adapter or run.adapter_file)
    config = dict(run.lora or {}, **config)
    write_gguf_lora(tensors, config, base_config(run), out, dtype=args.dtype or "f32", name=_name(run, args))
    return f"GGUF LoRA adapter written to {out}: llama-cli -m BASE.gguf --lora {out}"


def load_dense(run, args, *, merged: bool):
    """The run's base in fp32 (never 4-bit: GGUF stores dense weights), with its adapter merged if ``merged``."""
    import phi_models
    from lora_core import merge_and_unload
    from phi_models.adapters import attach_adapter

    model = phi_models.from_pretrained(run.base_model, revision=run.revision, dtype="float32")
    if merged:
        attach_adapter(model, args.adapter or run.adapter_file)
        merge_and_unload(model)
    return model.eval()


def export_gguf(run, args, out: Path) -> str:
    """The merged model (or the base with --base-only) as one complete GGUF."""
    from philora.deploy.gguf_model import write_gguf_model

    model = load_dense(run, args, merged=not args.base_only)
    write_gguf_model(
        model, tokenizer_dir(run), out, dtype=args.dtype or "f16", name=_name(run, args), card_dir=_card_dir(run)
    )
    what = "base model" if args.base_only else "merged model"
    return f"GGUF {what} written to {out}: llama-cli -m {out}"


def stop_strings(run, template: str | None) -> list[str]:
    """Stop strings for the Modelfile: the run's stop tokens as text, then the template's turn markers."""
    import phi_models
    from philora.deploy.ollama import TURN_STOPS

    tokenizer = phi_models.load_tokenizer(run.tokenizer or run.base_model, revision=run.revision)
    ids = list(run.stop_token_ids or tokenizer.stop_token_ids)
    tokens = [tokenizer.backend.id_to_token(i) for i in ids]
    return [t for t in tokens if t] + TURN_STOPS.get(template or "", [])


def ollama_template(run) -> str | None:
    """The run's prompt format for a Modelfile: "model" (the base's shipped Jinja template) becomes the Phi chat
    format that template was detected as (PhiTokenizer.chat_format), since Go templates cannot run Jinja."""
    if run.template != "model":
        return run.template
    import phi_models

    return phi_models.load_tokenizer(run.tokenizer or run.base_model, revision=run.revision).chat_format


def export_ollama(run, args, out: Path) -> str:
    """GGUF files (base + adapter, or merged with --merged) and a Modelfile in a new directory."""
    from lora_core import atomic_write
    from philora.deploy.gguf_model import write_gguf_model
    from philora.deploy.ollama import modelfile, template_for

    template = ollama_template(run)
    template_for(template)  # refuse a template Ollama cannot express before the slow part
    out.mkdir(parents=True, exist_ok=True)
    dtype = args.dtype or "f16"
    if args.merged:
        model_file, adapter_file = "model.gguf", None
        write_gguf_model(
            load_dense(run, args, merged=True),
            tokenizer_dir(run),
            out / model_file,
            dtype=dtype,
            name=_name(run, args),
            card_dir=_card_dir(run),
        )
    else:
        model_file, adapter_file = "base.gguf", "adapter.gguf"
        lora_args = argparse.Namespace(**dict(vars(args), dtype=dtype))
        export_gguf_lora(run, lora_args, out / adapter_file)
        write_gguf_model(
            load_dense(run, args, merged=False),
            tokenizer_dir(run),
            out / model_file,
            dtype=dtype,
            name=_name(run, args),
            card_dir=_card_dir(run),
        )
    text = modelfile(
        model_file=model_file,
        adapter_file=adapter_file,
        template=template,
        stops=stop_strings(run, template),
        system=args.system,
    )
    atomic_write(out / "Modelfile", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return f"Ollama model written to {out}: cd {out} && ollama create {shlex.quote(_name(run, args))} -f Modelfile"


def vllm_command(run, name: str) -> str:
    """``vllm serve BASE --enable-lora --lora-modules NAME=DIR --max-lora-rank R`` for the run's PEFT export."""
    from philora.deploy.checks import vllm_max_lora_rank

    if run.peft_dir is None:
        raise DeployError(
            f"{run.path}: the run has no PEFT export (peft/); write one with "
            f"`philora export {run.path} --format peft --out DIR`"
        )
    config = json.loads((Path(run.peft_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    rank = max([int(config.get("r", 0)), *(int(v) for v in (config.get("rank_pattern") or {}).values())])
    max_rank = vllm_max_lora_rank(rank)
    if max_rank is None:
        raise DeployError(
            f"LoRA rank {rank} is above vLLM's largest --max-lora-rank; see `philora check {run.path} --target vllm`"
        )
    base = run.base_model_repo or run.base_model
    return (
        f"vllm serve {shlex.quote(str(base))} --enable-lora --lora-modules "
        f"{shlex.quote(name)}={shlex.quote(str(Path(run.peft_dir).resolve()))} --max-lora-rank {max_rank}"
    )


def export_vllm(run, args, out: Path | None) -> str:
    """Print the vLLM command (nothing is written)."""
    return vllm_command(run, _name(run, args))


EXPORTERS = {"gguf-lora": export_gguf_lora, "gguf": export_gguf, "ollama": export_ollama, "vllm": export_vllm}
FORMATS = tuple(EXPORTERS)
FILE_FORMATS = ("gguf-lora", "gguf")


def export(args: argparse.Namespace) -> int:
    """Run one deploy format for ``args.target`` (a run directory); prints what was written, returns 0."""
    from philora.commands.common import CommandError, fresh_out_dir
    from philora.runs import open_run

    run = open_run(args.target)
    out = None
    if args.format in FILE_FORMATS:
        out = Path(args.out)
        if out.exists():
            raise CommandError(f"--out {out}: exists; pass a new file name (nothing existing is overwritten)")
    elif args.format == "ollama":
        out = fresh_out_dir(args.out)
    print(EXPORTERS[args.format](run, args, out))
    return 0
