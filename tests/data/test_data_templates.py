"""Each prompt format renders exactly the expected string, with exactly the replies as targets."""

from __future__ import annotations

import pytest

from philora.data.conversation import Conversation, Message
from philora.data.errors import DataError
from philora.data.sources.tweetsumm import SYSTEM_PROMPT
from philora.data.templates import default_template, render

CHAT = Conversation(
    (
        Message("system", "Be kind."),
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "Bye"),
        Message("assistant", "See you."),
    )
)
SINGLE = Conversation((Message("user", "Add 2 and 2."), Message("assistant", "4")))
WITH_INPUT = Conversation(
    (Message("system", "Summarize."), Message("user", " user: hi\nagent: hello "), Message("assistant", "A greeting."))
)


def _text(segments):
    return "".join(s.text for s in segments)


def _targets(segments):
    return [s.text for s in segments if s.is_target]


def test_roleplay_markers():
    segments = render(CHAT, "roleplay")
    assert _text(segments) == (
        "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\nHello!\n<|user|>\nBye\n<|assistant|>\nSee you.\n"
    )
    assert _targets(segments) == ["Hello!\n", "See you.\n"]


def test_human_assistant_guanaco():
    segments = render(CHAT, "human_assistant")
    assert _text(segments) == "Be kind.\n\n### Human: Hi### Assistant: Hello!### Human: Bye### Assistant: See you."
    assert _targets(segments) == [" Hello!", " See you."]


def test_instruct_output():
    segments = render(CHAT, "instruct")
    assert _text(segments) == "Be kind.\nInstruct: Hi\nOutput: Hello!\nInstruct: Bye\nOutput: See you."
    assert _targets(segments) == [" Hello!", " See you."]


def test_alpaca_with_and_without_input():
    assert _text(render(SINGLE, "alpaca")) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n4"
    )
    segments = render(WITH_INPUT, "alpaca")
    assert _text(segments) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSummarize.\n\n"
        "### Input:\n user: hi\nagent: hello \n\n### Response:\nA greeting."
    )
    assert _targets(segments) == ["A greeting."]


def test_instruction_is_the_tweetsumm_tutorial_format():
    conv = Conversation(
        (
            Message("system", SYSTEM_PROMPT),
            Message("user", "user: late\nagent: sorry"),
            Message("assistant", "Late order."),
        )
    )
    segments = render(conv, "instruction")
    assert _text(segments) == (
        f"### Instruction: {SYSTEM_PROMPT}\n\n### Input:\nuser: late\nagent: sorry\n\n### Response:\nLate order."
    )
    assert _targets(segments) == ["Late order."]


def test_plain_prompt_completion():
    segments = render(SINGLE, "plain")
    assert _text(segments) == "Add 2 and 2.4" and _targets(segments) == ["4"]


def test_phi3_chat_format_from_phi_models():
    segments = render(CHAT, "phi3")
    assert _text(segments) == (
        "<|system|>\nBe kind.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nBye<|end|>\n<|assistant|>\nSee you.<|end|>\n"
    )
    assert _targets(segments) == ["Hello!<|end|>", "See you.<|end|>"]


def test_phi4_mini_chat_format_from_phi_models():
    segments = render(CHAT, "phi4-mini")
    assert _text(segments) == (
        "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>"
        "<|user|>Bye<|end|><|assistant|>See you.<|end|>"
    )
    assert _targets(segments) == ["Hello!<|end|>", "See you.<|end|>"]


def test_weight_zero_turn_is_not_a_target_in_chat_formats():
    conv = Conversation(
        (
            Message("user", "Hi"),
            Message("assistant", "draft", train=False),
            Message("user", "More"),
            Message("assistant", "final"),
        )
    )
    assert _targets(render(conv, "phi3")) == ["final<|end|>"]
    assert _targets(render(conv, "roleplay")) == ["final\n"]


def test_text_examples_are_one_target_whatever_the_template():
    segments = render(Conversation(text="raw words"), "phi3")
    assert [(s.text, s.is_target) for s in segments] == [("raw words", True)]


def test_single_turn_templates_reject_multi_turn_and_unknown_names():
    with pytest.raises(DataError, match="template 'alpaca' renders one instruction"):
        render(CHAT, "alpaca")
    with pytest.raises(DataError, match="template 'chatml' is unknown"):
        render(SINGLE, "chatml")


def test_default_template_per_model_and_dataset():
    assert default_template("roleplay", None) == "roleplay"
    assert default_template("tweetsumm", None) == "instruction"
    assert default_template("oasst1", None) == "human_assistant"
    assert default_template("alpaca", None) == "alpaca"
    assert default_template("roleplay", "phi3") == "phi3"
    assert default_template("tweetsumm", "phi4-mini") == "phi4-mini"
