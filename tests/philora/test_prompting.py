"""Generation prompts equal the training rendering up to the assistant reply, for every template."""

from __future__ import annotations

from pathlib import Path

import pytest

import phi_models
from philora import data
from philora.data.conversation import Conversation, Message
from philora.data.templates import render
from philora.prompting import SINGLE_TURN_TEMPLATES, TEMPLATES, render_prompt, stop_strings_for

MULTI = [
    ("system", "You are Sherlock Holmes."),
    ("user", "Who are you?"),
    ("assistant", "A consulting detective."),
    ("user", "What is your method?"),
    ("assistant", "Observation, my dear fellow."),
]
SINGLE = [("system", "Summarise the dialogue."), ("user", "A: hi\nB: hello"), ("assistant", "They greet.")]


PHI35 = Path(__file__).resolve().parents[2] / ".." / "shared" / "realcases" / "02d_phi35_mini_instruct"


@pytest.fixture(scope="module")
def tok():
    return phi_models.load_tokenizer("tiny")


def _tokenizer_for(template, tiny):
    if template != "model":
        return tiny
    if not (PHI35 / "tokenizer.json").is_file():
        pytest.skip(f"{PHI35} is absent (the 'model' template needs a tokenizer that ships a chat template)")
    return phi_models.load_tokenizer(str(PHI35))


@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_is_the_training_prefix(template, tok):
    tok = _tokenizer_for(template, tok)
    turns = SINGLE if template in SINGLE_TURN_TEMPLATES else MULTI
    messages = [{"role": r, "content": c} for r, c in turns]
    segments = render(Conversation(tuple(Message(r, c) for r, c in turns), origin="t"), template, tok)
    text = "".join(s.text for s in segments)
    # Text: the prompt is the rendering up to where the last reply's target segment begins.
    last_target = max(i for i, s in enumerate(segments) if s.is_target)
    assert render_prompt(template, messages[:-1], tok) == "".join(s.text for s in segments[:last_target])
    # Tokens: the prompt's ids are the training ids up to the first position that learns the last reply.
    example = data.tokenize_segments(segments, tok, max_seq_len=512).example
    prompt_ids = tok.encode(render_prompt(template, messages[:-1], tok))
    reply_ids = tok.encode(text)[len(prompt_ids) :]
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.targets[len(prompt_ids) - 1] == reply_ids[0]  # trained to start the reply right here
    if template in phi_models.CHAT_FORMATS:
        assert render_prompt(template, messages[:-1], tok) == phi_models.render_chat_text(
            messages[:-1], template, add_generation_prompt=True
        )


def test_prompt_errors(tok):
    with pytest.raises(data.DataError, match="end with a user message"):
        render_prompt("human_assistant", [{"role": "assistant", "content": "x"}])
    with pytest.raises(data.DataError, match="template 'nope'"):
        render_prompt("nope", [{"role": "user", "content": "x"}])
    with pytest.raises(data.DataError, match="one instruction"):
        render_prompt(
            "alpaca",
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        )
    assert stop_strings_for("human_assistant") == ("### Human:",) and stop_strings_for("phi3") == ()
