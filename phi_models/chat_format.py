"""The exact Phi chat templates, rendered as Segments so loss masks come from the same text.

Formats (docs/architecture.md, "Chat formats"):
  phi3       ``<|{role}|>\\n{content}<|end|>\\n`` ... generation prompt ``<|assistant|>\\n``
  phi3.5     as phi3, but a system message with empty content is left out
  phi4-mini  ``<|{role}|>{content}<|end|>`` (no newlines); a system message with ``tools`` renders
             ``<|system|>{content}<|tool|>{tools}<|/tool|><|end|>``; generation prompt ``<|assistant|>``
  phi4       ``<|im_start|>{role}<|im_sep|>{content}<|im_end|>``; prompt ``<|im_start|>assistant<|im_sep|>``

``is_target`` is True for each assistant reply and its end-of-turn marker (``<|end|>`` /
``<|im_end|>``); the newline phi3 writes after the marker is not a target. The final EOS
of a training sample is appended by the caller (``data``), never here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phi_models.errors import PhiModelError

CHAT_FORMATS = ("phi3", "phi3.5", "phi4-mini", "phi4")
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Segment:
    """A piece of rendered conversation; ``is_target`` marks text the model learns to produce."""

    text: str
    is_target: bool = False


def _check(messages: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    checked = list(messages)
    for i, message in enumerate(checked):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PhiModelError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise PhiModelError(f"message {i} has role '{message['role']}'; expected one of {ROLES}")
        if not isinstance(message["content"], str):
            raise PhiModelError(f"message {i} content must be a string, got {type(message['content']).__name__}")
    return checked


def render_chat(
    messages: Iterable[Mapping[str, Any]], chat_format: str, add_generation_prompt: bool = False
) -> list[Segment]:
    """Render messages ({"role", "content"[, "tools"]}) in ``chat_format`` as Segments."""
    messages = _check(messages)
    if chat_format in ("phi3", "phi3.5"):
        segments = _render_phi3(messages, skip_empty_system=chat_format == "phi3.5")
        prompt = "<|assistant|>\n"
    elif chat_format == "phi4-mini":
        segments = _render_phi4_mini(messages)
        prompt = "<|assistant|>"
    elif chat_format == "phi4":
        segments = _render_phi4(messages)
        prompt = "<|im_start|>assistant<|im_sep|>"
    else:
        raise PhiModelError(f"unknown chat format '{chat_format}'; expected one of {CHAT_FORMATS}")
    if add_generation_prompt:
        segments.append(Segment(prompt, False))
    return _merge(segments)


def render_chat_text(
    messages: Iterable[Mapping[str, Any]], chat_format: str, add_generation_prompt: bool = False
) -> str:
    """The rendered conversation as one string."""
    return "".join(s.text for s in render_chat(messages, chat_format, add_generation_prompt))


def _render_phi3(messages: list[Mapping[str, Any]], skip_empty_system: bool) -> list[Segment]:
    out: list[Segment] = []
    for m in messages:
        if skip_empty_system and m["role"] == "system" and not m["content"]:
            continue
        if m["role"] == "assistant":
            out += [Segment("<|assistant|>\n"), Segment(m["content"] + "<|end|>", True), Segment("\n")]
        else:
            out.append(Segment(f"<|{m['role']}|>\n{m['content']}<|end|>\n"))
    return out


def _render_phi4_mini(messages: list[Mapping[str, Any]]) -> list[Segment]:
    out: list[Segment] = []
    for m in messages:
        if m["role"] == "assistant":
            out += [Segment("<|assistant|>"), Segment(m["content"] + "<|end|>", True)]
        elif m["role"] == "system" and m.get("tools"):
            tools = m["tools"] if isinstance(m["tools"], str) else json.dumps(m["tools"], ensure_ascii=False)
            out.append(Segment(f"<|system|>{m['content']}<|tool|>{tools}<|/tool|><|end|>"))
        else:
            out.append(Segment(f"<|{m['role']}|>{m['content']}<|end|>"))
    return out


def _render_phi4(messages: list[Mapping[str, Any]]) -> list[Segment]:
    out: list[Segment] = []
    for m in messages:
        out.append(Segment(f"<|im_start|>{m['role']}<|im_sep|>"))
        out.append(Segment(m["content"] + "<|im_end|>", m["role"] == "assistant"))
    return out


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbours with the same flag so callers see the fewest pieces."""
    merged: list[Segment] = []
    for seg in segments:
        if merged and merged[-1].is_target == seg.is_target:
            merged[-1] = Segment(merged[-1].text + seg.text, seg.is_target)
        elif seg.text:
            merged.append(seg)
    return merged
