"""TextStream: decoded increments equal decoding the whole id list; stop strings across token boundaries."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import phi_models
from phi_models import PhiModelError, TextStream

REALCASES = Path(__file__).resolve().parents[2] / ".." / "shared" / "realcases"
MULTIBYTE = [
    "naïve café — déjà vu ✓ 你好，世界！ 🙂🚀 Ünïcödé  two  spaces\nnew line\ttab",
    " leading space, then emoji 👩‍👩‍👧 and ½ ¾ µ",
    "日本語のテキストと English mixed 한국어 Ελληνικά русский",
]


def _tokenizer(kind: str):
    if kind == "tiny":
        return phi_models.load_tokenizer("tiny")
    folder = {
        "phi-2": "01_phi2_tokenizer",
        "phi-3": "02a_phi3_mini_4k_instruct_2024-04",
        "phi-3.5": "02d_phi35_mini_instruct",
    }[kind]
    path = REALCASES / folder
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"{path} is absent (real tokenizers live in ../shared/realcases)")
    return phi_models.load_tokenizer(str(path))


def _streamed(tok, ids, stop_strings=()):
    stream = TextStream(tok, stop_strings)
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.finish())
    assert "".join(pieces) == stream.text
    return pieces, stream


@pytest.mark.parametrize("kind", ["tiny", "phi-2", "phi-3", "phi-3.5"])
def test_stream_equals_whole_decode_on_multibyte_text(kind):
    tok = _tokenizer(kind)
    for text in MULTIBYTE:
        ids = tok.encode(text)
        pieces, _ = _streamed(tok, ids)
        assert "".join(pieces) == tok.decode(ids)
        assert not any("\ufffd" in p for p in pieces), pieces  # no broken UTF-8 on the way
    # Random token sequences too (what a sampling model may emit): still exactly the whole decode.
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))]
        pieces, _ = _streamed(tok, ids)
        assert "".join(pieces) == tok.decode(ids)


@pytest.mark.parametrize("kind", ["tiny", "phi-2", "phi-3"])
def test_byte_split_characters_are_held_until_complete(kind):
    tok = _tokenizer(kind)
    ids = tok.encode("🙂")
    assert len(ids) > 1  # one character over several tokens (byte pieces)
    pieces, _ = _streamed(tok, ids)
    assert [p for p in pieces if p] == ["🙂"]


@pytest.mark.parametrize("kind", ["tiny", "phi-2", "phi-3"])
def test_stop_string_spanning_token_boundaries(kind):
    tok = _tokenizer(kind)
    text = "The answer is 42.\n### Human: next question"
    ids = tok.encode(text)
    stop = "\n### Hum"
    assert len(tok.encode(stop)) > 1  # the stop string is spread over several tokens
    pieces, stream = _streamed(tok, ids, [stop, "never"])
    assert stream.stopped and stream.stop_string == stop
    assert "".join(pieces) == tok.decode(ids).split(stop)[0] == "The answer is 42."
    # Text that could still become the stop string is held back, then released when it does not.
    pieces, stream = _streamed(tok, tok.encode("a ### Hu b"), [stop])
    assert not stream.stopped and "".join(pieces) == tok.decode(tok.encode("a ### Hu b"))


def test_stop_strings_in_generate_and_text_callback():
    model = phi_models.from_pretrained("tiny")
    tok = phi_models.load_tokenizer("tiny")
    prompt = tok.encode("The cat")
    ids = phi_models.generate(model, prompt, max_new_tokens=24)[0]
    full = tok.decode(ids)
    # A stop string made of the last two characters of one token and the first two of the next.
    k = next(k for k in range(2, len(ids) - 1) if _clean_boundary(tok, ids, k))
    left, right = tok.decode(ids[:k]), tok.decode(ids[: k + 1])
    stop = left[-2:] + right[len(left) : len(left) + 2]
    got = {0: ""}
    cut = phi_models.generate(
        model,
        prompt,
        max_new_tokens=24,
        stop_strings=[stop],
        tokenizer=tok,
        on_text=lambda row, piece: got.__setitem__(row, got[row] + piece),
    )[0]
    assert got[0] == full[: full.index(stop)]
    assert ids[: len(cut)] == cut and stop in tok.decode(cut) and stop not in tok.decode(cut[:-1])
    assert len(cut) == k + 1
    with pytest.raises(PhiModelError, match="tokenizer"):
        phi_models.generate(model, prompt, stop_strings=["x"])
    with pytest.raises(PhiModelError, match="non-empty"):
        TextStream(tok, [""])


def _clean_boundary(tok, ids, k) -> bool:
    left, right = tok.decode(ids[:k]), tok.decode(ids[: k + 1])
    piece = right[len(left) :]
    stop = left[-2:] + piece[:2]
    return (
        right.startswith(left)
        and len(left) >= 2
        and len(piece) >= 2
        and "\ufffd" not in stop
        and tok.decode(ids).find(stop) == len(left) - 2
    )
