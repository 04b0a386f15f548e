"""Exact Phi chat templates (docs/architecture.md, "Chat formats") and their Segment targets."""

from __future__ import annotations

import pytest

from phi_models import PhiModelError, Segment, render_chat, render_chat_text

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello!"}


def test_phi3_generation_prompt():
    text = render_chat_text([SYSTEM, USER], "phi3", add_generation_prompt=True)
    assert text == "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_phi3_training_sample_segments():
    segments = render_chat([SYSTEM, USER, ASSISTANT], "phi3")
    assert segments == [
        Segment("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n", False),
        Segment("Hello!<|end|>", True),
        Segment("\n", False),
    ]
    # With data's final EOS this is the reference training sample.
    assert "".join(s.text for s in segments) + "<|endoftext|>" == (
        "<|system|>\nYou are a helpful "
        "assistant.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>"
    )


def test_phi35_skips_empty_system_but_phi3_keeps_it():
    empty = {"role": "system", "content": ""}
    assert render_chat_text([empty, USER], "phi3.5", True) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert render_chat_text([empty, USER], "phi3", True).startswith("<|system|>\n<|end|>\n")


def test_phi4_mini_no_newlines_and_tools():
    assert render_chat_text([SYSTEM, USER], "phi4-mini", True) == (
        "<|system|>You are a helpful assistant.<|end|><|user|>Hi<|end|><|assistant|>"
    )
    segments = render_chat([SYSTEM, USER, ASSISTANT], "phi4-mini")
    assert segments[-1] == Segment("Hello!<|end|>", True)
    tools = [{"name": "f", "parameters": {}}]
    text = render_chat_text([dict(SYSTEM, tools=tools), USER], "phi4-mini")
    assert text.startswith(
        '<|system|>You are a helpful assistant.<|tool|>[{"name": "f", "parameters": {}}]<|/tool|><|end|>'
    )


def test_phi4():
    text = render_chat_text([SYSTEM, USER, ASSISTANT], "phi4")
    assert text == (
        "<|im_start|>system<|im_sep|>You are a helpful assistant.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
        "<|im_start|>assistant<|im_sep|>Hello!<|im_end|>"
    )
    assert render_chat([USER, ASSISTANT], "phi4")[-1] == Segment("Hello!<|im_end|>", True)


def test_multi_turn_marks_every_assistant_reply():
    convo = [USER, ASSISTANT, {"role": "user", "content": "More"}, {"role": "assistant", "content": "Sure."}]
    targets = [s.text for s in render_chat(convo, "phi3") if s.is_target]
    assert targets == ["Hello!<|end|>", "Sure.<|end|>"]


def test_bad_messages_and_format():
    with pytest.raises(PhiModelError, match="unknown chat format 'chatml'"):
        render_chat([USER], "chatml")
    with pytest.raises(PhiModelError, match="message 0 has role 'bot'"):
        render_chat([{"role": "bot", "content": "x"}], "phi3")
    with pytest.raises(PhiModelError, match="message 1 must be a dict"):
        render_chat([USER, "hello"], "phi3")
