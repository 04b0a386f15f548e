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

``model`` is the model's own (shipped) Jinja chat template, read from its tokenizer folder and
rendered exactly as transformers does (see :mod:`data.model_template`); it is the default whenever
the tokenizer has one.

The final EOS is not part of any template: :mod:`data.tokenize` appends it.
"""

from __future__ import annotations

from collections.abc import Callable

from phi_models import chat_format
from phi_models.chat_format import Segment
from philora.data.conversation import Conversation, Message
from philora.data.errors import DataError
from philora.data.model_template import MODEL_TEMPLATE, render_with_model_template

ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)


def _target(message: Message) -> bool:
    return message.role == "assistant" and message.train


def _render_roleplay(messages: tuple[Message, ...]) -> list[Segment]:
    segments = []
    for message in messages:
        segments.append(Segment(f"<|{message.role}|>\n", False))
        segments.append(Segment(f"{message.content}\n", _target(message)))
    return segments


def _render_turns(
    messages, user_prefix: str, assistant_prefix: str, system_suffix: str, turn_sep: str
) -> list[Segment]:
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
        raise DataError(
            f"{origin}: template '{template}' renders one instruction and one response, but the "
            f"conversation has turns {roles}; use a chat template (e.g. human_assistant) instead"
        )
    system = messages[0].content if roles[0] == "system" else None
    return system, messages[-2].content, messages[-1]


def _render_alpaca(messages, origin: str) -> list[Segment]:
    system, user, reply = _single_turn(messages, "alpaca", origin)
    if system is not None:  # instruction + input
        prompt = f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{system}\n\n### Input:\n{user}\n\n### Response:\n"
    else:
        prompt = f"{ALPACA_PREAMBLE}### Instruction:\n{user}\n\n### Response:\n"
    return [Segment(prompt, False), Segment(reply.content, _target(reply))]


def _render_alpaca_record(conversation: Conversation) -> list[Segment]:
    # An Alpaca record with an input: the user turn joins instruction and input; the template splits them again.
    meta, reply = conversation.meta, conversation.messages[-1]
    prompt = (
        f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{meta['instruction']}\n\n### Input:\n{meta['input']}"
        f"\n\n### Response:\n"
    )
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
TEMPLATES = (MODEL_TEMPLATE,) + tuple(BASE_TEMPLATES) + CHAT_TEMPLATES

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


def default_template(kind: str, tokenizer_chat_format: str | None, has_shipped_template: bool = False) -> str:
    """The format to use for a source ``kind``: the model's own template when it ships one, else its
    chat format, else (a base model) the usual format for that kind of data."""
    if has_shipped_template:
        return MODEL_TEMPLATE
    if tokenizer_chat_format is not None:
        return tokenizer_chat_format
    return DEFAULT_BASE_TEMPLATE.get(kind, "human_assistant")


def describe_template(template: str, tokenizer) -> str:
    """Where ``template`` comes from, for the dataset report (e.g. ``chat_template.jinja, like phi3.5``)."""
    if template == MODEL_TEMPLATE:
        shipped = getattr(tokenizer, "chat_template", None)
        origin = shipped.origin if shipped is not None else "none"
        fmt = getattr(tokenizer, "chat_format", None)
        return f"the model's own, from {origin}" + (f", a {fmt}-family template" if fmt else "")
    if template in CHAT_TEMPLATES:
        return "hand-written Phi chat format"
    return "hand-written prompt format"


def render(conversation: Conversation, template: str, tokenizer=None, dropped: list | None = None) -> list[Segment]:
    """Render a conversation as segments; ``is_target`` marks what the loss is computed on.

    Plain-text examples are one target segment, whatever the template. ``model`` needs the
    ``tokenizer``; the roles of messages its template leaves out are appended to ``dropped``.
    """
    if conversation.text is not None:
        return [Segment(conversation.text, True)]
    if template == MODEL_TEMPLATE:
        rendering = render_with_model_template(conversation.messages, tokenizer, conversation.origin)
        if dropped is not None:
            dropped.extend(rendering.dropped_roles)
        return rendering.segments
    if template == "alpaca" and conversation.meta.get("shape") == "alpaca" and conversation.meta.get("input"):
        return _render_alpaca_record(conversation)
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


def _as_messages(messages) -> tuple[Message, ...]:
    out = []
    for index, message in enumerate(messages):
        if isinstance(message, Message):
            out.append(message)
        elif isinstance(message, dict) and "role" in message and isinstance(message.get("content"), str):
            out.append(Message(str(message["role"]), message["content"]))
        else:
            raise DataError(f"message {index} must be a dict with 'role' and a string 'content', got {message!r}")
    return tuple(out)


def render_prompt(template: str, messages, tokenizer=None, add_generation_prompt: bool = True) -> str:
    """The text a model trained with ``template`` is prompted with: ``messages`` rendered in that template,
    then (``add_generation_prompt``) the header after which the assistant's reply begins.

    ``template`` is a name from :data:`TEMPLATES` (e.g. a run's ``template``); ``model`` renders the
    tokenizer's shipped template exactly as transformers does (so it may start with a BOS or, without the
    generation prompt, end with the EOS text); the others render as in training, without the final EOS.
    For the base templates the generation prompt is everything training puts before a reply's target
    text (``### Response:\n``, ``### Assistant:``). ``messages`` are dicts with ``role`` and ``content``.
    """
    check_template(template)
    if template == MODEL_TEMPLATE:
        rendering_tokenizer = _renderer_check(tokenizer)
        dicts = [m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in messages]
        try:
            return rendering_tokenizer.apply_chat_template(dicts, add_generation_prompt=add_generation_prompt)
        except Exception as err:  # PhiModelError from the template, one line
            raise DataError(str(err)) from None
    parsed = _as_messages(messages)
    if template in CHAT_TEMPLATES:
        dicts = [{"role": m.role, "content": m.content} for m in parsed]
        try:
            return chat_format.render_chat_text(dicts, template, add_generation_prompt)
        except Exception as err:
            raise DataError(str(err)) from None
    if not add_generation_prompt:
        return "".join(s.text for s in BASE_TEMPLATES[template](parsed, "prompt"))
    # Render with a placeholder reply and keep what comes before the reply's target text.
    segments = BASE_TEMPLATES[template](parsed + (Message("assistant", "x"),), "prompt")
    last_target = max(i for i, s in enumerate(segments) if s.is_target)
    return "".join(s.text for s in segments[:last_target])


def _renderer_check(tokenizer):
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name", "") if tokenizer is not None else ""
        raise DataError(
            f"template {MODEL_TEMPLATE!r} needs the model's tokenizer with its own chat template; "
            f"{name or 'none was given'} has none: pick a named template (one of {list(TEMPLATES[1:])})"
        )
    return tokenizer
