"""Loss masks cover exactly the target tokens; the EOS is appended and learned even when pad == eos."""

from __future__ import annotations

from data.conversation import Conversation, Message
from data.templates import render
from data.tokenize import IGNORE_INDEX, tokenize_segments

CHAT = Conversation((Message("system", "Be kind."), Message("user", "Hi"), Message("assistant", "Hello!"),
                     Message("user", "Bye"), Message("assistant", "See you.")))


def _learned(example):
    return [t for t in example.targets if t != IGNORE_INDEX]


def test_masks_cover_exactly_the_replies_their_end_marker_and_eos(tiny_tok):
    assert tiny_tok.pad_token_id == tiny_tok.eos_token_id  # the Phi situation that used to mask the EOS
    segments = render(CHAT, "phi3")
    result = tokenize_segments(segments, tiny_tok, max_seq_len=512)
    example = result.example
    assert not result.truncated and len(example.input_ids) == len(example.targets)
    # Inputs are the whole rendering; the EOS is only ever a target.
    assert tiny_tok.decode(example.input_ids, skip_special_tokens=False) == "".join(s.text for s in segments)
    assert tiny_tok.decode(_learned(example), skip_special_tokens=False) == (
        "Hello!<|end|>See you.<|end|><|endoftext|>")
    assert _learned(example)[-1] == tiny_tok.eos_token_id and example.targets[-1] == tiny_tok.eos_token_id
    # Shifted: wherever a target is set it is the next input token.
    for t in range(len(example) - 1):
        if example.targets[t] != IGNORE_INDEX:
            assert example.targets[t] == example.input_ids[t + 1]
    # Exactly the target segments' tokens, position by position.
    expected = []
    for text, is_target in [(s.text, s.is_target) for s in segments]:
        expected += [is_target] * len(tiny_tok.encode(text))
    expected.append(True)  # EOS
    assert [t != IGNORE_INDEX for t in example.targets] == expected[1:]


def test_train_on_prompt_learns_everything(tiny_tok):
    example = tokenize_segments(render(CHAT, "roleplay"), tiny_tok, max_seq_len=512, train_on_prompt=True).example
    assert IGNORE_INDEX not in example.targets
    assert example.targets == example.input_ids[1:] + [tiny_tok.eos_token_id]


def test_truncation_keeps_the_start_and_is_reported(tiny_tok):
    full = tokenize_segments(render(CHAT, "roleplay"), tiny_tok, max_seq_len=512).example
    cut = tokenize_segments(render(CHAT, "roleplay"), tiny_tok, max_seq_len=20)
    assert cut.truncated and cut.num_tokens == len(full) + 1
    assert cut.example.input_ids == full.input_ids[:20] and cut.example.targets == full.targets[:20]


def test_example_with_no_target_left_is_dropped(tiny_tok):
    long_prompt = Conversation((Message("user", "word " * 200), Message("assistant", "ok")))
    result = tokenize_segments(render(long_prompt, "human_assistant"), tiny_tok, max_seq_len=16)
    assert result.example is None and result.truncated
