"""Loss masks from the model's own (shipped) chat template.

The conversation is rendered with the tokenizer's Jinja template (``PhiTokenizer.apply_chat_template``,
exactly transformers' rendering) and then rendered again, prefix by prefix, to find what each turn adds:

- an assistant turn's target starts where ``messages[:i]`` rendered *with* the generation prompt ends
  (so the prompt header, e.g. ``<|assistant|>\\n``, is never learned) and runs to the end of what
  ``messages[:i + 1]`` adds, without the whitespace the template writes after the reply's end marker
  (the ``\\n`` after ``<|end|>``), which is what the hand-written formats mark too;
- a non-assistant message that adds nothing (the April-2024 Phi-3 template drops ``system``) is
  *dropped*; the caller counts these for the dataset report.

A template that ends a conversation with the EOS text (``{{ eos_token }}`` when no generation prompt
is asked for) has it removed here, since :mod:`data.tokenize` appends the EOS id itself, learned, as for
every other template; the ids are the same as tokenizing the template's full output.
"""

from __future__ import annotations

from dataclasses import dataclass

from phi_models import PhiModelError
from phi_models.chat_format import Segment
from philora.data.conversation import Message
from philora.data.errors import DataError

MODEL_TEMPLATE = "model"


@dataclass
class ModelRendering:
    """Segments of one conversation and the roles of the messages the template left out."""

    segments: list[Segment]
    dropped_roles: list[str]


def _without_final_eos(text: str, eos: str | None) -> str:
    return text[: -len(eos)] if eos and text.endswith(eos) else text


def _renderer(tokenizer, origin: str):
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            f"template {MODEL_TEMPLATE!r} needs a tokenizer with its own chat template "
            f"(chat_template.jinja or tokenizer_config.json's chat_template); "
            f"{getattr(tokenizer, 'name', '') or 'this tokenizer'} has none: pick a named template"
        )

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        except PhiModelError as err:
            raise DataError(f"{origin}: {err}") from None

    return render


def render_with_model_template(messages: tuple[Message, ...], tokenizer, origin: str = "") -> ModelRendering:
    """Render ``messages`` with the tokenizer's shipped template as prompt/target Segments (no final EOS)."""
    render = _renderer(tokenizer, origin)
    eos = tokenizer.special_tokens_map.get("eos_token")
    dicts = [{"role": m.role, "content": m.content} for m in messages]
    full = _without_final_eos(render(dicts, False), eos)
    segments: list[Segment] = []
    dropped: list[str] = []
    at = 0  # end of the text already placed in segments
    try:  # what messages[:i] renders to; some templates refuse an empty conversation
        previous = _without_final_eos(render([], False), eos)
    except DataError:
        previous = ""
    for i, message in enumerate(messages):
        upto = _without_final_eos(render(dicts[: i + 1], False), eos)
        if not full.startswith(upto):
            raise DataError(
                f"{origin}: the model's chat template renders a conversation differently from its "
                f"first {i + 1} messages, so per-turn loss masks cannot be taken from it; "
                f"pass a named template (--template phi3, ...) instead"
            )
        if message.role != "assistant":
            if upto == previous and message.content:
                dropped.append(message.role)
            previous = upto
            continue
        prompt = render(dicts[:i], True) if i else ""
        start = len(prompt) if full.startswith(prompt) and len(prompt) <= len(upto) else len(previous)
        start = max(start, at)
        added = full[start : len(upto)]
        found = added.rfind(message.content)
        if found < 0:
            dropped.append(message.role)
            previous = upto
            continue
        content_end = start + found + len(message.content)
        end = content_end + len(full[content_end : len(upto)].rstrip())
        segments += [Segment(full[at:start], False), Segment(full[start:end], message.train)]
        at = end
        previous = upto
    segments.append(Segment(full[at:], False))
    return ModelRendering([s for s in segments if s.text], dropped)
