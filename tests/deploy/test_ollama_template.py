"""Modelfile TEMPLATEs, rendered with Go text/template semantics (tests/deploy/gotemplate.py), equal our
training rendering up to the assistant's reply, for every template."""

from __future__ import annotations

import pytest

from philora.data.conversation import Conversation, Message
from philora.data.templates import TEMPLATES, render
from philora.deploy import DeployError
from philora.deploy.ollama import TEMPLATES as GO_TEMPLATES
from philora.deploy.ollama import modelfile
from tests.deploy.gotemplate import render as go_render

SINGLE_TURN = {"alpaca", "instruction"}


def training_prompt(messages: list[Message], template: str) -> str:
    """What training renders before the last assistant reply (the reply's target segment)."""
    segments = render(Conversation(messages=tuple(messages)), template)
    last_target = max(i for i, s in enumerate(segments) if s.is_target)
    return "".join(s.text for s in segments[:last_target])


def ollama_prompt(messages: list[Message], template: str) -> str:
    """What Ollama renders for the same history (the reply not yet written)."""
    history = messages[:-1]
    system = next((m.content for m in history if m.role == "system"), "")
    prompt = next(m.content for m in reversed(history) if m.role == "user")
    data = {"Messages": [{"Role": m.role, "Content": m.content} for m in history], "System": system, "Prompt": prompt}
    return go_render(GO_TEMPLATES[template], data)


CONVERSATIONS = {
    "multi-turn, system": [
        Message("system", "You are terse."),
        Message("user", "Hi there"),
        Message("assistant", "Hello."),
        Message("user", 'Say "2+2"?'),
        Message("assistant", "4"),
    ],
    "one turn": [Message("user", "Summarise: a, b"), Message("assistant", "a b")],
    "one turn, system": [Message("system", "Context here"), Message("user", "Question?"), Message("assistant", "Yes")],
}


def test_every_training_template_has_a_go_template():
    # "model" renders the base's own Jinja template; the export maps it to the chat format it was detected as.
    assert set(GO_TEMPLATES) == set(TEMPLATES) - {"model"}


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("template", sorted(GO_TEMPLATES))
def test_modelfile_template_equals_training_rendering(template, conversation):
    messages = CONVERSATIONS[conversation]
    if template in SINGLE_TURN and conversation.startswith("multi"):
        pytest.skip(f"{template} renders one instruction and one response")
    assert ollama_prompt(messages, template) == training_prompt(messages, template)


def test_phi35_template_drops_an_empty_system_message_like_training():
    messages = [Message("system", ""), Message("user", "Hi"), Message("assistant", "Yo")]
    assert (
        ollama_prompt(messages, "phi3.5")
        == training_prompt(messages, "phi3.5")
        == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    )


def test_modelfile_lines():
    text = modelfile(
        model_file="base.gguf",
        adapter_file="adapter.gguf",
        template="phi3",
        stops=["<|endoftext|>", "<|end|>", "<|end|>"],
        system="Be kind.",
    )
    lines = text.splitlines()
    assert lines[:2] == ["FROM ./base.gguf", "ADAPTER ./adapter.gguf"]
    assert lines[-3:] == ['PARAMETER stop "<|endoftext|>"', 'PARAMETER stop "<|end|>"', 'SYSTEM """Be kind."""']
    assert 'TEMPLATE """{{ range .Messages }}' in text
    with pytest.raises(DeployError, match="no Ollama TEMPLATE"):
        modelfile(model_file="m.gguf", template="chatml", stops=[])
