"""``philora check RUN --target peft|vllm|llama.cpp|ollama``: what each target would refuse, with the fix."""

from __future__ import annotations

import argparse

from philora.commands.common import fail, user_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora check``."""
    from philora.deploy.checks import TARGETS

    parser.add_argument("run", help="a run directory (the --output-dir of philora train)")
    parser.add_argument(
        "--target",
        action="append",
        choices=TARGETS,
        default=None,
        help=f"deployment target, repeatable (default: all of {', '.join(TARGETS)})",
    )


def run(args: argparse.Namespace) -> int:
    """Print each problem with its fix; exit 0 when deployable to every target asked, 1 otherwise."""
    from philora.deploy.checks import TARGETS, run_problems
    from philora.deploy.export_formats import base_config
    from philora.runs import open_run

    try:
        info = open_run(args.run)
        targets = args.target or list(TARGETS)
        found = run_problems(info, targets, model_type=base_config(info).model_type)
    except user_errors() as err:
        return fail(str(err))
    for problem in found:
        print(f"refused by {problem}")
    bad = {p.target for p in found}
    for target in targets:
        if target not in bad:
            print(f"{target}: deployable")
    return 1 if found else 0
