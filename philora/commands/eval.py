"""``philora eval RUN_OR_MODEL``: loss, perplexity and generation metrics of a run (or a model) on a split."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``philora eval``."""
    parser.add_argument(
        "target",
        metavar="RUN_OR_MODEL",
        help="a run directory (its adapter, data and settings are used) or a model: preset, hub id, local dir",
    )
    parser.add_argument(
        "--adapter",
        default=None,
        help="adapter file or PEFT directory to evaluate instead of the run's own, or on a model",
    )
    parser.add_argument("--data", default=None, help="dataset to evaluate on; none: the run's own --data")
    parser.add_argument(
        "--split",
        default="val",
        choices=("val", "test", "train"),
        help="val/train: the run's split of --data; test: every example of --data, nothing held out",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate only the first N examples of the split; none: all"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128, help="most tokens generated per reply (greedy)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="rows per batch; none: the run's --eval-batch-size"
    )
    parser.add_argument(
        "--compare-base", action="store_true", help="also evaluate the base with the adapter disabled, side by side"
    )
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="none: the run's --device")
    parser.add_argument(
        "--precision",
        default=None,
        choices=("auto", "bf16", "fp16", "fp32"),
        help="none: the precision the run trained in (the same numbers as its evaluation)",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where the JSON, JSONL and HTML go; none: RUN/eval, or runs/eval-<model> for a model",
    )


def default_output_dir(target) -> Path:
    """``<run>/eval`` for a run, ``runs/eval-<model name>`` for a plain model."""
    if target.run_dir is not None:
        return target.run_dir / "eval"
    return Path("runs") / f"eval-{Path(target.settings.model.rstrip('/')).name.replace('.', '_') or 'model'}"


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the files; one line on stderr and exit 2 on bad input."""
    from philora.commands.common import fail
    from philora.evaluation.errors import USER_ERRORS

    try:
        return _run(args)
    except USER_ERRORS as err:
        return fail(str(err))


def _run(args: argparse.Namespace) -> int:
    from philora.evaluation.errors import EvalError
    from philora.evaluation.report import format_table, write_results
    from philora.evaluation.runner import run_eval
    from philora.evaluation.target import load_target

    for name in ("limit", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EvalError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.split == "test" and not args.data:
        raise EvalError("--split test evaluates every example of --data: pass --data FILE holding the held-out records")
    target = load_target(
        args.target, adapter=args.adapter, data=args.data, device=args.device, precision=args.precision
    )
    results = run_eval(
        target,
        split=args.split,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        compare_base=args.compare_base,
    )
    print(format_table(results))
    paths = write_results(results, args.output_dir or default_output_dir(target), run_dir=target.run_dir)
    print(f"results: {paths['json']}\nsamples: {paths['jsonl']}\npage:    {paths['html']}")
    return 0
