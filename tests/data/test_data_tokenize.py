"""Loss masks cover exactly the target tokens; the EOS is appended and learned even when pad == eos."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken, Tokenizer, normalizers
from tokenizers.models import BPE

from phi_models.tokenizer import PhiTokenizer
from philora.data.conversation import Conversation, Message
from philora.data.errors import DataError
from philora.data.templates import render
from philora.data.tokenize import IGNORE_INDEX, _token_flags, tokenize_segments

CHAT = Conversation(
    (
        Message("system", "Be kind."),
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "Bye"),
        Message("assistant", "See you."),
    )
)


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
        "Hello!<|end|>See you.<|end|><|endoftext|>"
    )
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


# --- SentencePiece-style (Phi-3) tokenization -------------------------------------------------


def _llama_like_tokenizer(rstrip: bool) -> PhiTokenizer:
    """A tiny BPE shaped like Phi-3's tokenizer.json: Prepend("▁") + Replace(" ", "▁") normalizer,
    no pre-tokenizer, byte fallback, and the Phi-3 chat markers as added special tokens."""
    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for ch in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!.,?:#":
        vocab.setdefault(ch, len(vocab))
    merges = []
    # "▁"-words first, so "▁Hello" and a bare "Hello" both tokenize as one piece.
    words = ["▁Hello", "▁Hi", "▁Bye", "▁See", "▁you", "▁Be", "▁kind", "Hello", "See", "Hi", "Bye", "###"]
    for word in words:
        for k in range(1, len(word)):
            if (word[:k], word[k]) not in merges:
                merges.append((word[:k], word[k]))
            vocab.setdefault(word[: k + 1], len(vocab))
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False, rstrip=rstrip)
            for t in ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
        ]
    )
    return PhiTokenizer(
        backend,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_format="phi3",
        name="llama-like",
    )


# rstrip=False is the original Phi-3 tokenizer.json; later revisions set rstrip=True on the markers,
# which makes them swallow the newline after them ("<|end|>\n" is one token spanning target and prompt).
@pytest.mark.parametrize(
    "rstrip, replies",
    [
        (False, ["Hello", "!", "<|end|>", "See", "▁you", ".", "<|end|>"]),
        (True, ["▁Hello", "!", "<|end|>", "▁See", "▁you", ".", "<|end|>"]),
    ],
)
def test_phi3_style_tokenizer_trains_on_the_full_string_tokens(rstrip, replies):
    tok = _llama_like_tokenizer(rstrip)
    segments = render(CHAT, "phi3")
    text = "".join(s.text for s in segments)
    example = tokenize_segments(segments, tok, max_seq_len=512).example
    # Exactly what generation sees: the whole rendering encoded at once, then the EOS as last target.
    assert example.input_ids + [example.targets[-1]] == tok.encode(text) + [tok.eos_token_id]
    # Encoding the reply on its own would have started it with a spurious "▁" piece.
    assert tok.backend.encode("Hello!<|end|>", add_special_tokens=False).tokens[0] == "▁Hello"
    learned = [tok.backend.id_to_token(t) for t in _learned(example)]
    assert learned == replies + ["<|endoftext|>"]
    for t in range(len(example) - 1):
        assert example.targets[t] in (IGNORE_INDEX, example.input_ids[t + 1])


def test_base_template_reply_after_a_space_has_no_doubled_marker():
    # "### Assistant:" + " Hello!": per-segment encoding gave "▁" + "▁Hello" (two pieces for one word).
    tok = _llama_like_tokenizer(False)
    conversation = Conversation((Message("user", "Hi"), Message("assistant", "Hello!")))
    segments = render(conversation, "human_assistant")
    example = tokenize_segments(segments, tok, max_seq_len=512).example
    assert example.input_ids == tok.encode("".join(s.text for s in segments))
    assert [tok.backend.id_to_token(t) for t in _learned(example)] == ["▁Hello", "!", "<|endoftext|>"]


def test_a_token_straddling_segments_goes_with_its_first_character():
    # Segments: prompt [0, 4), target [4, 9), prompt [9, 12).
    starts, flags = [0, 4, 9], [False, True, False]
    offsets = [(0, 3), (3, 5), (4, 6), (6, 10), (10, 12), (8, 9)]
    assert _token_flags(offsets, starts, flags) == [False, False, True, True, False, True]


def test_a_tokenizer_without_offsets_is_refused():
    class Bare:
        eos_token_id = 0

        def encode(self, text):
            return [1]

    with pytest.raises(DataError, match="pass a phi_models.PhiTokenizer"):
        tokenize_segments(render(CHAT, "roleplay"), Bare(), max_seq_len=16)
