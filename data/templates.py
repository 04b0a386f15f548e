"""Prompt formats: rendering a conversation into text segments marked as prompt or target.

The Phi chat templates (``phi3``, ``phi3.5``, ``phi4-mini``, ``phi4``) belong to
``phi_models.chat_format`` and are used from there, so training renders exactly what
the tokenizer's ``apply_chat_template`` renders. This module adds the formats the
base-model (phi-1.5/2) tutorials use:

- ``roleplay``: ``<|system|>``/``<|user|>``/``<|assistant|>`` marker lines (the roleplay data's own style)
- ``human_assistant``: Guanaco's ``### Human: ...### Assistant: ...``
- ``alpaca``: Alpaca-LoRA's preamble with ``### Instruction:`` / ``### Input:`` / ``### Response:``
- ``instruction``: the TweetSumm tutorial's ``### Instruction: ...`` / ``### Input:`` / ``### Response:``
- ``instruct``: phi-2's QA style ``Instruct: ...\\nOutput: ...``
- ``plain``: the contents back to back (TRL's prompt + completion)

The final EOS is not part of any template: :mod:`data.tokenize` appends it.
"""

from __future__ import annotations

from typing import Callable

from phi_models import chat_format
from phi_models.chat_format import Segment

from .conversation import Conversation, Message
from .errors import DataError

ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.\n\n")
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n")


def _target(message: Message) -> bool:
    return message.role == "assistant" and message.train


def _render_roleplay(messages: tuple[Message, ...]) -> list[Segment]:
    segments = []
    for message in messages:
        segments.append(Segment(f"<|{message.role}|>\n", False))
        segments.append(Segment(f"{message.content}\n", _target(message)))
    return segments


def _render_turns(messages, user_prefix: str, assistant_prefix: str, system_suffix: str, turn_sep: str) -> list[Segment]:
    # Shared by the "### Human" and "Instruct:" styles: prompt header, then " reply" as the target.
    segments, first_turn = [], True
    for message in messages:
        if message.role == "system":
            segments.append(Segment(message.content + system_suffix, False))
        elif message.role == "user":
            segments.append(Segment(("" if first_turn else turn_sep) + user_prefix + message.content, False))
            first_turn = False
        else:
            segments.append(Segment(assistant_prefix, False))
            segments.append(Segment(" " + message.content, _target(message)))
            first_turn = False
    return segments


def _render_human_assistant(messages) -> list[Segment]:
    return _render_turns(messages, "### Human: ", "### Assistant:", "\n\n", "")


def _render_instruct(messages) -> list[Segment]:
    return _render_turns(messages, "Instruct: ", "\nOutput:", "\n", "\n")


def _single_turn(messages, template: str, origin: str) -> tuple[str | None, str, Message]:
    """Split a one-exchange conversation into (system or None, user text, assistant message)."""
    roles = [m.role for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError(f"{origin}: template '{template}' renders one instruction and one response, but the "
                        f"conversation has turns {roles}; use a chat template (e.g. human_assistant) instead")
    system = messages[0].content if roles[0] == "system" else None
    return system, messages[-2].content, messages[-1]


def _render_alpaca(messages, origin: str) -> list[Segment]:
    system, user, reply = _single_turn(messages, "alpaca", origin)
    if system is not None:  # instruction + input
        prompt = f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{system}\n\n### Input:\n{user}\n\n### Response:\n"
    else:
        prompt = f"{ALPACA_PREAMBLE}### Instruction:\n{user}\n\n### Response:\n"
    return [Segment(prompt, False), Segment(reply.content, _target(reply))]


def _render_instruction(messages, origin: str) -> list[Segment]:
    system, user, reply = _single_turn(messages, "instruction", origin)
    if system is not None:
        prompt = f"### Instruction: {system}\n\n### Input:\n{user.strip()}\n\n### Response:\n"
    else:
        prompt = f"### Instruction: {user.strip()}\n\n### Response:\n"
    return [Segment(prompt, False), Segment(reply.content.strip(), _target(reply))]


def _render_plain(messages) -> list[Segment]:
    return [Segment(m.content, _target(m)) for m in messages]


BASE_TEMPLATES: dict[str, Callable] = {
    "roleplay": lambda messages, origin: _render_roleplay(messages),
    "human_assistant": lambda messages, origin: _render_human_assistant(messages),
    "instruct": lambda messages, origin: _render_instruct(messages),
    "alpaca": _render_alpaca,
    "instruction": _render_instruction,
    "plain": lambda messages, origin: _render_plain(messages),
}
CHAT_TEMPLATES = tuple(chat_format.CHAT_FORMATS)
TEMPLATES = tuple(BASE_TEMPLATES) + CHAT_TEMPLATES

# Base-model format per source kind; chat models always use their own chat format.
DEFAULT_BASE_TEMPLATE = {
    "roleplay": "roleplay",
    "tweetsumm": "instruction",
    "alpaca": "alpaca",
    "prompt_completion": "plain",
    "oasst1": "human_assistant",
    "messages": "human_assistant",
    "sharegpt": "human_assistant",
}


def check_template(name: str) -> str:
    """Return ``name`` if it is a known template, else raise listing them."""
    if name not in TEMPLATES:
        raise DataError(f"template {name!r} is unknown; use one of {list(TEMPLATES)}")
    return name


def default_template(kind: str, tokenizer_chat_format: str | None) -> str:
    """The format to use for a source ``kind`` with a model whose chat format is given (None: base model)."""
    if tokenizer_chat_format is not None:
        return tokenizer_chat_format
    return DEFAULT_BASE_TEMPLATE.get(kind, "human_assistant")


def render(conversation: Conversation, template: str) -> list[Segment]:
    """Render a conversation as segments; ``is_target`` marks what the loss is computed on.

    Plain-text examples are one target segment, whatever the template.
    """
    if conversation.text is not None:
        return [Segment(conversation.text, True)]
    if template in BASE_TEMPLATES:
        return BASE_TEMPLATES[template](conversation.messages, conversation.origin)
    messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
    segments = chat_format.render_chat(messages, check_template(template))
    return _apply_train_flags(segments, conversation.messages)


def _apply_train_flags(segments: list[Segment], messages: tuple[Message, ...]) -> list[Segment]:
    # Chat formats mark every assistant reply as target; turns switched off (weight 0) are
    # unmarked here, counting target runs in order (one run per assistant reply).
    if all(m.train for m in messages):
        return segments
    flags = iter([m.train for m in messages if m.role == "assistant"])
    out, in_run, current = [], False, True
    for segment in segments:
        if segment.is_target and not in_run:
            current = next(flags, True)
        in_run = segment.is_target
        out.append(Segment(segment.text, segment.is_target and current))
    return out
