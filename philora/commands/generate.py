"""``philora generate RUN_OR_MODEL (--prompt TEXT | --prompt-file IN.jsonl --out OUT.jsonl)``.

One prompt streams its reply to stdout as it is generated. A JSONL file is answered in batches
(``--batch-size`` prompts share each forward pass); every input line gets one output line with its
fields plus ``completion``, ``finish_reason`` and ``completion_tokens``, written atomically at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from philora.commands._inference_options import (
    add_model_arguments,
    add_sampling_arguments,
    check_sampling_arguments,
    generate_kwargs,
    load_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora generate``."""
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", default=None, help="the user message to answer (rendered in the template)")
    source.add_argument(
        "--prompt-file",
        default=None,
        metavar="IN.jsonl",
        help='one JSON object a line: {"prompt": TEXT} or {"messages": [{"role", "content"}, ...]}',
    )
    parser.add_argument("--out", default=None, metavar="OUT.jsonl", help="where --prompt-file answers go")
    parser.add_argument("--system", default=None, help="a system prompt / persona put before each prompt")
    parser.add_argument("--raw", action="store_true", help="feed the prompt text as is, without the template")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together (--prompt-file)")
    add_sampling_arguments(parser, max_new_tokens=128)


def run(args: argparse.Namespace) -> int:
    """Generate; returns the exit code (2 with one line on stderr for bad input)."""
    from philora.commands.common import user_errors
    from philora.inference import InferenceError

    try:
        if args.prompt_file is not None and args.out is None:
            raise InferenceError("--prompt-file needs --out OUT.jsonl for the answers")
        if args.prompt is not None and args.out is not None:
            raise InferenceError("--out goes with --prompt-file; --prompt streams to stdout")
        if args.batch_size < 1:
            raise InferenceError(f"--batch-size must be >= 1, got {args.batch_size}")
        check_sampling_arguments(args)
        records = _read_prompts(Path(args.prompt_file)) if args.prompt_file is not None else None
        loaded = load_from_args(args)
        kwargs = generate_kwargs(args, loaded)
        if records is None:
            _generate_one(args, loaded, kwargs)
        else:
            _generate_file(args, loaded, kwargs, records)
        return 0
    except user_errors() as err:
        print(f"philora generate: error: {err}", file=sys.stderr, flush=True)
        return 2


def _read_prompts(path: Path) -> list[dict]:
    from philora.inference import InferenceError

    if not path.is_file():
        raise InferenceError(f"--prompt-file {path}: no such file")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InferenceError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not (
            isinstance(record.get("prompt"), str) or isinstance(record.get("messages"), list)
        ):
            raise InferenceError(f'{path}:{number}: expected {{"prompt": TEXT}} or {{"messages": [...]}}')
        records.append(record)
    if not records:
        raise InferenceError(f"--prompt-file {path}: holds no prompts")
    return records


def prompt_text(loaded, args, prompt: str | None = None, messages: list | None = None) -> str:
    """The text fed to the model: the template rendering of the messages, or ``prompt`` as is with --raw."""
    from philora.prompting import render_prompt

    if args.raw and prompt is not None:
        return prompt
    if messages is None:
        messages = [{"role": "user", "content": prompt}]
    if args.system is not None and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": args.system}] + list(messages)
    return render_prompt(loaded.template, messages, loaded.tokenizer)


def _generate_one(args, loaded, kwargs) -> None:
    import phi_models

    ids = loaded.tokenizer.encode(prompt_text(loaded, args, prompt=args.prompt))
    phi_models.generate(loaded.model, [ids], on_text=lambda row, text: print(text, end="", flush=True), **kwargs)
    print(flush=True)


def _generate_file(args, loaded, kwargs, records: list[dict]) -> None:
    import phi_models
    from lora_core import atomic_write

    tok = loaded.tokenizer
    lines = []
    for start in range(0, len(records), args.batch_size):
        batch = records[start : start + args.batch_size]
        prompts = [
            tok.encode(prompt_text(loaded, args, prompt=r.get("prompt"), messages=r.get("messages"))) for r in batch
        ]
        texts = [""] * len(batch)

        def collect(row: int, piece: str, texts: list[str] = texts) -> None:
            texts[row] += piece

        outputs = phi_models.generate(loaded.model, prompts, on_text=collect, **kwargs)
        for record, ids, text in zip(batch, outputs, texts):
            stopped = len(ids) < kwargs["max_new_tokens"] or len(text) < len(tok.decode(ids))
            lines.append(
                json.dumps(
                    dict(
                        record,
                        completion=text,
                        finish_reason="stop" if stopped else "length",
                        completion_tokens=len(ids),
                    ),
                    ensure_ascii=False,
                )
            )
        print(f"generated {min(start + args.batch_size, len(records))}/{len(records)}", file=sys.stderr, flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))
