"""The model's own chat template against transformers and Microsoft's golden cases (../shared/realcases)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from phi_models import load_tokenizer
from phi_models.chat_format import render_chat
from philora.data import DataError, render_prompt
from philora.data.conversation import Message
from philora.data.model_template import render_with_model_template
from philora.data.tokenize import IGNORE_INDEX, tokenize_segments

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "realcases"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realcases is absent (a user's clone)")

PHI3_RELEASES = {
    "02a_phi3_mini_4k_instruct_2024-04": "phi3",
    "02b_phi3_mini_128k_instruct_2024-04": "phi3",
    "02c_phi3_mini_128k_instruct_2024-07": "phi3",
    "02d_phi35_mini_instruct": "phi3.5",
    "02e_phi3_mini_4k_instruct_2024-07_tokenizer_ortx": "phi3",
    "02f_phi3_mini_128k_instruct_2024-04-23_first_release_tokenizer_ortx": "phi3",
}
APRIL = {
    "02a_phi3_mini_4k_instruct_2024-04",
    "02b_phi3_mini_128k_instruct_2024-04",
    "02f_phi3_mini_128k_instruct_2024-04-23_first_release_tokenizer_ortx",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    "system": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ],
    "multi": [
        {"role": "system", "content": "You are kind."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4 "},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6  \n"},
    ],
    "empty_system": [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ],
    "unicode": [{"role": "user", "content": "Ça va? 日本語 🙂"}, {"role": "assistant", "content": "Très bien — ✓"}],
    "open": [{"role": "system", "content": "S"}, {"role": "user", "content": "Ask"}],
}


def tokenizer_folder(tmp_path: Path, release: str, template_from: Path | None = None) -> Path:
    """The release's tokenizer files linked into a folder of their own (no config.json, so transformers
    loads only the tokenizer); ``template_from`` adds a chat_template.jinja and its slim tokenizer_config."""
    folder = tmp_path / release
    folder.mkdir()
    for name in TOKENIZER_FILES:
        if (REAL / release / name).is_file():
            os.symlink(REAL / release / name, folder / name)
    if template_from is not None:
        (folder / "tokenizer_config.json").unlink()
        os.symlink(template_from / "tokenizer_config.json", folder / "tokenizer_config.json")
        os.symlink(template_from / "chat_template.jinja", folder / "chat_template.jinja")
    return folder


def hf_tokenizer(folder: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def target_spans(example, tok, text: str) -> list[str]:
    """The text under each run of learned tokens, by the tokens' character offsets in ``text``
    (``text`` is what was tokenized, the EOS included; decoding would add SentencePiece's spaces)."""
    encoding = tok.backend.encode(text, add_special_tokens=False)
    assert encoding.ids == example.input_ids + [example.targets[-1]]
    learned = [False] + [t != IGNORE_INDEX for t in example.targets]  # targets[t] is the token at t + 1
    spans, start = [], None
    for position, flag in enumerate(learned + [False]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            spans.append(text[encoding.offsets[start][0] : encoding.offsets[position - 1][1]])
            start = None
    return spans


def as_messages(conversation) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in conversation)


@needs_real
@pytest.mark.parametrize("release", sorted(PHI3_RELEASES))
def test_apply_chat_template_equals_transformers_for_every_phi3_release(tmp_path, release):
    folder = tokenizer_folder(tmp_path, release)
    ours, theirs = load_tokenizer(folder), hf_tokenizer(folder)
    assert ours.chat_format == PHI3_RELEASES[release]
    assert ours.chat_template.origin == "tokenizer_config.json"
    for name, conversation in CONVERSATIONS.items():
        for generation_prompt in (False, True):
            expected = theirs.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
            assert ours.apply_chat_template(conversation, add_generation_prompt=generation_prompt) == expected, name


@needs_real
def test_phi4_mini_template_renders_as_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = json.loads((REAL / "03_phi4_mini_instruct_tokenizer_config_ortx" / "tokenizer_config.json").read_text())
    # Phi-4-mini's tokenizer.json is not in realcases: render its template on a Phi-3.5 tokenizer folder.
    folder = tokenizer_folder(tmp_path, "02d_phi35_mini_instruct")
    (folder / "tokenizer_config.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    tools = [{"role": "system", "content": "S", "tools": '[{"name": "f"}]'}, {"role": "user", "content": "go"}]
    for conversation in [*CONVERSATIONS.values(), tools]:
        for generation_prompt in (False, True):
            assert ours.apply_chat_template(
                conversation, add_generation_prompt=generation_prompt
            ) == theirs.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)


@needs_real
def test_microsoft_golden_cases_string_and_ids():
    cases = json.loads(
        (
            REAL / "07b_chat_template_fixtures" / "onnxruntime-extensions__test_tokenizer_chat__phi_cases.json"
        ).read_text()
    )
    case = next(c for c in cases if c["test"] == "Phi3MiniChatTemplate")
    tok = load_tokenizer(REAL / "02e_phi3_mini_4k_instruct_2024-07_tokenizer_ortx")
    text = tok.apply_chat_template(case["messages"], add_generation_prompt=case["add_generation_prompt"])
    assert text == case["expected_output"]
    assert tok.encode(text) == case["expected_ids"]

    genai = json.loads(
        (
            REAL / "07b_chat_template_fixtures" / "onnxruntime-genai__c_api_tests__Phi4Mini_ChatTemplate_case.json"
        ).read_text()
    )
    from phi_models.shipped_template import render_shipped

    assert (
        render_shipped(
            genai["chat_template"], genai["messages"], {"eos_token": "<|endoftext|>"}, genai["add_generation_prompt"]
        )
        == genai["expected_output"]
    )


@needs_real
def test_transformers5_layout_is_read_and_detected_as_phi35(tmp_path):
    adapter_dir = REAL / "05a_phi35_prompt_tuning_adapter_with_weights"
    folder = tokenizer_folder(tmp_path, "02d_phi35_mini_instruct", template_from=adapter_dir)
    ours, theirs = load_tokenizer(folder), hf_tokenizer(folder)
    assert ours.chat_template.origin == "chat_template.jinja"
    assert ours.chat_format == "phi3.5"
    for conversation in CONVERSATIONS.values():
        for generation_prompt in (False, True):
            assert ours.apply_chat_template(
                conversation, add_generation_prompt=generation_prompt
            ) == theirs.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)


@needs_real
@pytest.mark.parametrize("release", sorted(PHI3_RELEASES))
def test_masks_from_shipped_template_cover_exactly_the_replies(release):
    tok = load_tokenizer(REAL / release)
    for name, conversation in CONVERSATIONS.items():
        if conversation[-1]["role"] != "assistant":
            continue
        messages = as_messages(conversation)
        rendering = render_with_model_template(messages, tok)
        example = tokenize_segments(rendering.segments, tok, max_seq_len=4096).example
        # The ids are the template's own output tokenized, with the EOS at the end exactly once.
        full = tok.apply_chat_template(conversation)
        eos = tok.special_tokens_map["eos_token"]
        expected_ids = tok.encode(full if full.endswith(eos) else full + eos)
        assert example.input_ids + [example.targets[-1]] == expected_ids, name
        replies = [m["content"] + "<|end|>" for m in conversation if m["role"] == "assistant"]
        replies[-1] += eos
        text = "".join(s.text for s in rendering.segments) + eos
        # With rstrip end markers (all but 02f) the "\n" after <|end|> is part of no token.
        spans = [span.replace("<|end|>\n", "<|end|>") for span in target_spans(example, tok, text)]
        assert spans in (replies, replies[:-1] + [replies[-1][: -len(eos)], eos]), name
        has_system = any(m["role"] == "system" and m["content"] for m in conversation)
        assert rendering.dropped_roles == (["system"] if release in APRIL and has_system else []), name


@needs_real
@pytest.mark.parametrize(
    "release",
    [
        "02c_phi3_mini_128k_instruct_2024-07",
        "02d_phi35_mini_instruct",
        "02e_phi3_mini_4k_instruct_2024-07_tokenizer_ortx",
    ],
)
def test_shipped_masks_equal_hand_written_where_the_templates_agree(release):
    tok = load_tokenizer(REAL / release)
    for name, conversation in CONVERSATIONS.items():
        if conversation[-1]["role"] != "assistant":
            continue
        hand = render_chat(conversation, tok.chat_format)
        shipped = render_with_model_template(as_messages(conversation), tok).segments
        assert "".join(s.text for s in shipped) == "".join(s.text for s in hand), name
        a = tokenize_segments(hand, tok, max_seq_len=4096).example
        b = tokenize_segments(shipped, tok, max_seq_len=4096).example
        assert (a.input_ids, a.targets) == (b.input_ids, b.targets), name


@needs_real
def test_render_prompt_uses_the_shipped_template():
    tok = load_tokenizer(REAL / "02a_phi3_mini_4k_instruct_2024-04")
    messages = [{"role": "system", "content": "dropped"}, {"role": "user", "content": "Hi"}]
    assert render_prompt("model", messages, tok) == "<s><|user|>\nHi<|end|>\n<|assistant|>\n"
    assert render_prompt("phi3", messages, tok) == "<|system|>\ndropped<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_render_prompt_named_templates(tiny_tok):
    user = [{"role": "user", "content": "Sum up"}]
    assert render_prompt("alpaca", user).endswith("### Instruction:\nSum up\n\n### Response:\n")
    assert render_prompt("human_assistant", user) == "### Human: Sum up### Assistant:"
    assert render_prompt("instruct", user) == "Instruct: Sum up\nOutput:"
    assert render_prompt("phi4-mini", user) == "<|user|>Sum up<|end|><|assistant|>"
    assert render_prompt("phi3", user, add_generation_prompt=False) == "<|user|>\nSum up<|end|>\n"
    with pytest.raises(DataError, match="own chat template"):
        render_prompt("model", user, tiny_tok)
    with pytest.raises(DataError, match="unknown"):
        render_prompt("nope", user)


def test_shipped_template_is_sandboxed_and_errors_are_one_line(tmp_path):
    from phi_models import PhiModelError
    from phi_models.shipped_template import render_shipped

    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(PhiModelError, match="refused"):
        render_shipped(escape, [{"role": "user", "content": "x"}], {})
    with pytest.raises(PhiModelError, match="only user"):
        render_shipped("{{ raise_exception('only user') }}", [], {})
    with pytest.raises(PhiModelError, match="does not parse"):
        render_shipped("{% for %}", [], {})
    assert (
        render_shipped(
            "{{ messages[0] | tojson }}{% generation %}G{% endgeneration %}", [{"role": "user", "content": "é<"}], {}
        )
        == '{"role": "user", "content": "é<"}G'
    )
