"""``philora chat RUN_OR_MODEL``: a terminal chat in the run's template, replies streamed as generated.

Lines typed are user messages; ``/reset`` forgets the conversation, ``/system TEXT`` sets the system
prompt (persona) and starts afresh, ``/exit`` (or end of input) quits. When the conversation no longer
fits the context with room for a reply, the oldest exchanges are dropped, and the chat says so.
Single-turn templates (alpaca, instruction) answer each message on its own.
"""

from __future__ import annotations

import argparse
import sys

from philora.commands._inference_options import (
    add_model_arguments,
    add_sampling_arguments,
    check_sampling_arguments,
    generate_kwargs,
    load_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora chat``."""
    add_model_arguments(parser)
    parser.add_argument("--system", default=None, help="system prompt or persona for the conversation")
    add_sampling_arguments(parser, max_new_tokens=256)


def say(text: str) -> None:
    """A status line of the chat (on stderr, so stdout holds the replies alone)."""
    print(text, file=sys.stderr, flush=True)


class Conversation:
    """The chat history and the system prompt, fitted to the model's context when rendered."""

    def __init__(self, loaded, system: str | None, reply_budget: int):
        from philora.prompting import SINGLE_TURN_TEMPLATES

        self.loaded = loaded
        self.system = system
        self.turns: list[dict] = []  # user/assistant messages, oldest first
        self.reply_budget = reply_budget
        self.keeps_history = loaded.template not in SINGLE_TURN_TEMPLATES

    def prompt_ids(self, user_text: str) -> list[int] | None:
        """Token ids of the prompt answering ``user_text``; drops the oldest exchanges to fit (None: cannot fit)."""
        if not self.keeps_history:
            self.turns = []
        user = {"role": "user", "content": user_text}
        if self._fit(self.turns + [user]) is None and self._fit([user]) is None:
            return None  # the message alone is too long: keep the history as it was
        self.turns.append(user)
        while (ids := self._fit(self.turns)) is None:
            del self.turns[:2]  # the oldest user message and its reply
            say("(dropped the oldest exchange to fit the context)")
        return ids

    def _fit(self, turns: list[dict]) -> list[int] | None:
        """Prompt ids for ``turns`` if they leave room for a reply, else None."""
        from philora.prompting import render_prompt

        system = [{"role": "system", "content": self.system}] if self.system else []
        ids = self.loaded.tokenizer.encode(render_prompt(self.loaded.template, system + turns))
        return ids if len(ids) + self.reply_budget <= self.loaded.context_length else None

    def add_reply(self, text: str) -> None:
        """Remember the assistant's reply."""
        self.turns.append({"role": "assistant", "content": text})


def run(args: argparse.Namespace) -> int:
    """Chat until /exit or end of input; returns the exit code."""
    from philora.commands.common import user_errors

    try:
        check_sampling_arguments(args)
        loaded = load_from_args(args)
        kwargs = generate_kwargs(args, loaded)
    except user_errors() as err:
        print(f"philora chat: error: {err}", file=sys.stderr, flush=True)
        return 2
    chat = Conversation(loaded, args.system, args.max_new_tokens)
    say(
        f"chatting with {loaded.name} in the {loaded.template!r} template; /reset, /system TEXT, /exit"
        + ("" if chat.keeps_history else f" (the {loaded.template} template is single-turn: no history)")
    )
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/reset":
            chat.turns = []
            say("(conversation reset)")
            continue
        if text.startswith("/system"):
            chat.system, chat.turns = text[len("/system") :].strip() or None, []
            say(f"(system prompt {'set' if chat.system else 'cleared'}; conversation reset)")
            continue
        try:
            ids = chat.prompt_ids(text)
        except user_errors() as err:
            say(f"error: {err}")
            continue
        if ids is None:
            say("(that message alone does not fit the context with room for a reply; send a shorter one)")
            continue
        chat.add_reply(_reply(loaded, ids, kwargs))


def _reply(loaded, ids: list[int], kwargs: dict) -> str:
    import phi_models

    pieces: list[str] = []

    def show(row: int, piece: str) -> None:
        pieces.append(piece)
        print(piece, end="", flush=True)

    phi_models.generate(loaded.model, [ids], on_text=show, **kwargs)
    print(flush=True)
    return "".join(pieces)
