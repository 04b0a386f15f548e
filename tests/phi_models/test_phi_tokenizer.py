"""PhiTokenizer: special tokens, stop ids, chat formats; the tiny tokenizer; loading from a directory."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import phi_models
from phi_models import PhiModelError, load_tokenizer

PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>", "<s>"]


def _write_bpe(directory, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["Hello there, how are you? I am fine, thanks."] * 20, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return tok


@pytest.fixture
def phi3_dir(tmp_path):
    directory = tmp_path / "phi3tok"
    _write_bpe(directory, PHI3_SPECIALS)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": {"content": "<|endoftext|>"}, "pad_token": "<|endoftext|>"})
    )
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 1, 3]}))
    return directory


def test_directory_tokenizer_special_tokens_and_stops(phi3_dir):
    tok = load_tokenizer(phi3_dir)
    assert tok.chat_format == "phi3"
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (0, 0, 5)
    assert tok.stop_token_ids == [0, 3, 1]  # eos, <|end|>, then the generation_config list
    ids = tok.encode("<|user|>\nHello there<|end|>")
    assert ids[0] == tok.token_to_id("<|user|>") and ids[-1] == tok.token_to_id("<|end|>")
    assert tok.decode(ids) == "\nHello there"
    assert tok.decode(ids, skip_special_tokens=False) == "<|user|>\nHello there<|end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == "<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_base_model_tokenizer_has_no_chat_format(tmp_path):
    directory = tmp_path / "phi2tok"
    _write_bpe(directory, ["<|endoftext|>"])
    (directory / "config.json").write_text(json.dumps({"model_type": "phi", "bos_token_id": 0, "eos_token_id": 0}))
    tok = load_tokenizer(directory)
    assert tok.chat_format is None and tok.eos_token_id == 0 and tok.stop_token_ids == [0]
    with pytest.raises(PhiModelError, match="no chat format"):
        tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert load_tokenizer(directory, chat_format="phi4-mini").chat_format == "phi4-mini"


def test_phi35_detected_from_template(phi3_dir):
    config = json.loads((phi3_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    (phi3_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(phi3_dir).chat_format == "phi3.5"


def test_tiny_tokenizer_fits_tiny_model():
    tok = load_tokenizer("tiny")
    model = phi_models.from_pretrained("tiny")
    assert tok.vocab_size <= model.config.vocab_size
    assert tok.eos_token_id is not None and tok.eos_token_id in tok.stop_token_ids
    text = "Hello, world! <|endoftext|>"
    ids = tok.encode(text)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_errors(tmp_path):
    (tmp_path / "notok").mkdir()
    with pytest.raises(PhiModelError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "notok")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(PhiModelError, match="not a readable tokenizer.json"):
        load_tokenizer(tmp_path / "bad")
    with pytest.raises(PhiModelError, match="unknown model 'gpt-2'"):
        load_tokenizer("gpt-2")
