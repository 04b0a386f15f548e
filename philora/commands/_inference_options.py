"""Options shared by generate, chat and serve: what to load, and how to sample."""

from __future__ import annotations

import argparse

from philora.data.templates import TEMPLATES


def add_model_arguments(parser: argparse.ArgumentParser, adapter_help: str | None = None) -> None:
    """RUN_OR_MODEL, --template, --quantize, --dtype, --device (and --adapter unless ``adapter_help`` is "")."""
    parser.add_argument(
        "target",
        metavar="RUN_OR_MODEL",
        help="a training run directory, or a model: preset (tiny, phi-2, ...), hub id, local dir, merged export",
    )
    if adapter_help != "":
        parser.add_argument(
            "--adapter",
            default=None,
            metavar="PATH",
            help=adapter_help
            or "an adapter to apply: our .safetensors file or a PEFT directory (for a run: instead of the run's own)",
        )
    parser.add_argument(
        "--template",
        default=None,
        choices=TEMPLATES,
        help="prompt format (None: the run's training template, else the model's chat format, else human_assistant)",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        choices=("none", "nf4", "fp4"),
        help="load the base in 4 bits (None: as the run was trained; none for a model)",
    )
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (None: the run's / checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (None: cuda if available)")


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """--temperature, --top-k, --top-p, --min-p, --repetition-penalty, --max-new-tokens, --stop, --seed."""
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    group.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (None = off)")
    group.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (None = off)")
    group.add_argument(
        "--min-p",
        type=float,
        default=None,
        help="drop tokens below this fraction of the top token's probability (None = off)",
    )
    group.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (1 = off)")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="most tokens per reply")
    group.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when the reply contains TEXT (repeatable; the template's own stops always apply)",
    )
    group.add_argument("--seed", type=int, default=None, help="seed for sampling (None = unseeded)")


def check_sampling_arguments(args: argparse.Namespace) -> None:
    """Refuse bad sampling values before the (slow) loading, with phi_models' own messages."""
    from phi_models import SamplingParams
    from phi_models.streaming import check_stop_strings
    from philora.inference import InferenceError

    SamplingParams(args.temperature, args.top_k, args.top_p, args.min_p, args.repetition_penalty)
    check_stop_strings(args.stop)
    if args.max_new_tokens < 1:
        raise InferenceError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")


def generate_kwargs(args: argparse.Namespace, loaded) -> dict:
    """Keyword arguments for phi_models.generate from the sampling options and the loaded model."""
    return dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        stop_ids=loaded.stop_ids,
        stop_strings=tuple(loaded.stop_strings) + tuple(args.stop),
        tokenizer=loaded.tokenizer,
        seed=args.seed,
        pad_id=pad_id_of(loaded.tokenizer),
    )


def pad_id_of(tokenizer) -> int:
    """The id prompts are left-padded with: pad, else EOS, else 0 (padding is masked either way)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def load_from_args(args: argparse.Namespace, with_adapter: bool = True):
    """The InferenceModel the options name (``with_adapter`` False: --adapter means something else)."""
    from philora.inference import load_inference_model

    adapter = args.adapter if with_adapter else None
    return load_inference_model(
        args.target,
        adapter=adapter,
        quantize=args.quantize,
        dtype=args.dtype,
        device=args.device,
        template=args.template,
    )
