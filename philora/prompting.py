"""Generation prompts in the template a model was trained with, and the stops that end a reply.

A generation prompt is the training rendering of the conversation cut where the assistant's reply
begins: the conversation is rendered by ``data.templates.render`` (the very code training uses)
with a placeholder reply, and everything before the reply's segment is the prompt. So the model
sees, token for token, the context it learned to answer in (tests check this for every template).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from data.conversation import Conversation, Message
from data.errors import DataError
from data.templates import BASE_TEMPLATES, CHAT_TEMPLATES, TEMPLATES, check_template, render

_REPLY = "\x00reply\x00"  # placeholder; never in user text (NUL is refused below)

# Base templates end a reply with the EOS they were trained on; a model that runs on into the next
# turn is cut at that turn's header as well.
TEMPLATE_STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "roleplay": ("<|user|>", "<|system|>"),
    "human_assistant": ("### Human:",),
    "instruct": ("\nInstruct:",),
    "alpaca": ("### Instruction:",),
    "instruction": ("### Instruction:",),
    "plain": (),
}
SINGLE_TURN_TEMPLATES = ("alpaca", "instruction")


def default_template(tokenizer) -> str:
    """The template for a model without a run: its chat format, else human_assistant (data's default)."""
    return tokenizer.chat_format or "human_assistant"


def render_prompt(template: str, messages: Iterable[Mapping[str, Any]], tokenizer=None) -> str:
    """The text a model trained with ``template`` should continue to answer ``messages``.

    ``messages`` are ``{"role": "system"|"user"|"assistant", "content": str}`` dicts ending with a
    user turn. Raises ``data.DataError`` naming the problem for anything the template cannot render.
    """
    check_template(template)
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in (
            "system", "user", "assistant"
        ):
            raise DataError(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, got {m!r}")
        if "\x00" in m["content"]:
            raise DataError(f"message {i} contains a NUL character")
        turns.append(Message(m["role"], m["content"]))
    if not turns or turns[-1].role != "user":
        raise DataError("the conversation must end with a user message to generate a reply")
    conversation = Conversation(messages=tuple(turns) + (Message("assistant", _REPLY),), origin="prompt")
    segments = render(conversation, template)
    prompt = []
    for segment in segments:
        if _REPLY in segment.text:
            break
        prompt.append(segment.text)
    return "".join(prompt)


def stop_strings_for(template: str) -> tuple[str, ...]:
    """Extra stop strings for ``template`` (the chat formats stop on their end-of-turn token ids)."""
    return TEMPLATE_STOP_STRINGS.get(check_template(template), ())


__all__ = ["BASE_TEMPLATES", "CHAT_TEMPLATES", "TEMPLATES", "default_template", "render_prompt", "stop_strings_for"]
