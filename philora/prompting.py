"""Generation prompts in the template a model was trained with, and the stops that end a reply.

A generation prompt is the training rendering of the conversation cut where the assistant's reply
begins (``data.render_prompt``, which renders with the very code training uses), so the model sees,
token for token, the context it learned to answer in (tests/philora/test_prompting.py checks this
for every template).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from philora.data.errors import DataError
from philora.data.templates import BASE_TEMPLATES, CHAT_TEMPLATES, TEMPLATES, check_template
from philora.data.templates import default_template as data_default_template
from philora.data.templates import render_prompt as data_render_prompt

# Base templates end a reply with the EOS they were trained on; a model that runs on into the next
# turn is cut at that turn's header as well.
TEMPLATE_STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "roleplay": ("<|user|>", "<|system|>"),
    "human_assistant": ("### Human:",),
    "instruct": ("\nInstruct:",),
    "alpaca": ("### Instruction:",),
    "instruction": ("### Instruction:",),
    "plain": (),
    "model": (),
}
SINGLE_TURN_TEMPLATES = ("alpaca", "instruction")


def default_template(tokenizer) -> str:
    """The template for a model without a run: what training would pick for chat data (data.default_template)."""
    shipped = getattr(tokenizer, "chat_template", None) is not None
    return data_default_template("messages", tokenizer.chat_format, shipped)


def render_prompt(template: str, messages: Iterable[Mapping[str, Any]], tokenizer=None) -> str:
    """The text a model trained with ``template`` should continue to answer ``messages``.

    ``messages`` are ``{"role", "content"}`` dicts ending with a user turn; ``tokenizer`` is needed by the
    ``model`` template (the tokenizer's own chat template). Raises ``data.DataError`` naming the problem.
    """
    messages = list(messages)
    if not messages or not isinstance(messages[-1], Mapping) or messages[-1].get("role") != "user":
        raise DataError("the conversation must end with a user message to generate a reply")
    return data_render_prompt(template, messages, tokenizer, add_generation_prompt=True)


def stop_strings_for(template: str) -> tuple[str, ...]:
    """Extra stop strings for ``template`` (the chat formats stop on their end-of-turn token ids)."""
    return TEMPLATE_STOP_STRINGS.get(check_template(template), ())


__all__ = ["BASE_TEMPLATES", "CHAT_TEMPLATES", "TEMPLATES", "default_template", "render_prompt", "stop_strings_for"]
