"""The ``philora`` command line: a dispatcher over the subcommand modules in ``philora/commands``.

Subcommand modules are imported only when chosen, so ``philora --help`` is quick and a subcommand's
optional dependencies (a server, plotting) are needed only by that subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). A module defines add_arguments(parser) + run(args) -> int,
# or main(argv) -> int when it parses its own arguments (train reuses TrainConfig's parser).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("philora.commands.train", "fine-tune a Phi model with LoRA/QLoRA (same options as python train.py)"),
    "generate": ("philora.commands.generate", "answer a prompt (streamed) or a JSONL file of prompts (batched)"),
    "chat": ("philora.commands.chat", "chat in the terminal in the run's template, with history and a persona"),
    "serve": ("philora.commands.serve", "OpenAI-compatible HTTP server: many adapters on one base, batched"),
    "export": (
        "philora.commands.export",
        "write a run's adapter as PEFT, GGUF (llama.cpp), an Ollama folder, or the vLLM command",
    ),
    "merge": ("philora.commands.merge", "fold a run's adapter into its base and write a Hugging Face checkpoint"),
    "check": ("philora.commands.check", "list what peft / vLLM / llama.cpp / Ollama would refuse in a run's adapter"),
    "push": ("philora.commands.push", "upload a run's PEFT adapter (or merged model) to the Hugging Face Hub"),
    "eval": (
        "philora.commands.eval",
        "loss, perplexity, ROUGE, exact match and stop share of a run or model on a split",
    ),
    "report": ("philora.commands.report", "plot a run's curves (PNG) and summarize its metrics"),
    "lm-eval": (
        "philora.commands.lm_eval",
        "lm-evaluation-harness with the philora model registered (lm_eval's own options)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: one sub-parser per command, without importing the command modules."""
    parser = argparse.ArgumentParser(
        prog="philora",
        description="LoRA and QLoRA fine-tuning of Microsoft's Phi models; `philora SUB --help` for each command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``philora``: pick the subcommand, let its module parse the rest, return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        from philora.training.guidance import did_you_mean

        valid = ", ".join(COMMANDS)
        print(
            f"philora: error: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; choose one of: {valid}",
            file=sys.stderr,
        )
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    if hasattr(module, "main"):
        return module.main(rest)
    from philora.training.guidance import OneLineArgumentParser  # errors on one line, listing choices, with suggestions

    parser = OneLineArgumentParser(
        prog=f"philora {name}", description=COMMANDS[name][1], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    module.add_arguments(parser)
    return module.run(parser.parse_args(rest))
