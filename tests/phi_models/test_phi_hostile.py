"""Hostile model files (config.json, tokenizer files, safetensors headers and indices) and careless
arguments: one PhiModelError each, never a traceback, a hang or a file opened outside the model."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

import phi_models
from phi_models import PhiModelError
from phi_models.presets import tiny_tokenizer_path

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small Phi-3-shaped checkpoint written by transformers (config.json + model.safetensors)."""
    from tests.phi_models.conftest import hf_model

    directory = tmp_path_factory.mktemp("phi3")
    hf_model("phi-3-mini-4k").save_pretrained(directory, safe_serialization=True)
    return directory


def _copy(model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def _one_line_error(call, *words):
    with pytest.raises(PhiModelError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message
    for word in words:
        assert word in message, message
    return message


CONFIG_VALUES = {
    "zero-heads": ({"num_attention_heads": 0}, "num_attention_heads"),
    "negative-hidden": ({"hidden_size": -64}, "hidden_size"),
    "fractional-layers": ({"num_hidden_layers": 1.5}, "num_hidden_layers"),
    "ten-million-layers": ({"num_hidden_layers": 10_000_000}, "num_hidden_layers"),
    "string-vocab": ({"vocab_size": "big"}, "vocab_size"),
    "bool-intermediate": ({"intermediate_size": True}, "intermediate_size"),
    "string-eps": ({"rms_norm_eps": "tiny"}, "malformed config"),
    "negative-theta": ({"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}}, "rope_theta"),
    "zero-positions": ({"max_position_embeddings": 0}, "max_position_embeddings"),
    "eos-string": ({"eos_token_id": "end"}, "eos_token_id"),
    "dropout-above-one": ({"attention_dropout": 3.0}, "attention_dropout"),
    "kv-heads-not-dividing": ({"num_key_value_heads": 3}, "num_key_value_heads"),
    "rope-scaling-not-a-dict": ({"rope_scaling": [1, 2]}, "malformed config"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_VALUES), ids=sorted(CONFIG_VALUES))
def test_malformed_config_values(model_dir, tmp_path, case):
    changes, word = CONFIG_VALUES[case]
    directory = _copy(model_dir, tmp_path)
    _edit_config(directory, **changes)
    _one_line_error(lambda: phi_models.from_pretrained(directory), "config.json", word)


CONFIG_FILES = {
    "not-utf8": (b'{"model_type": "phi3", "name": "\xff"}', "UTF-8"),
    "deep-nesting": (DEEP.encode(), "nested too deeply"),
    "huge-integer": (b'{"model_type": "phi3", "vocab_size": ' + b"7" * 10_000 + b"}", "config.json"),
    "not-an-object": (b"[1, 2]", "expected a JSON object"),
    "broken": (b'{"model_type": ', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES), ids=sorted(CONFIG_FILES))
def test_malformed_config_file(model_dir, tmp_path, case):
    content, word = CONFIG_FILES[case]
    directory = _copy(model_dir, tmp_path)
    (directory / "config.json").write_bytes(content)
    _one_line_error(lambda: phi_models.from_pretrained(directory), "config.json", word)


def test_config_json_that_is_a_directory(model_dir, tmp_path):
    directory = _copy(model_dir, tmp_path)
    (directory / "config.json").unlink()
    (directory / "config.json").mkdir()
    _one_line_error(lambda: phi_models.from_pretrained(directory), "is a directory")


@pytest.mark.parametrize(
    "shard",
    ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors", "C:\\\\x.safetensors", "model.bin"],
)
def test_index_shard_paths_stay_inside_the_model(model_dir, tmp_path, shard):
    directory = _copy(model_dir, tmp_path)
    (tmp_path / "outside.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    keys = json.loads(
        (directory / "model.safetensors").read_bytes()[
            8 : 8 + struct.unpack("<Q", (directory / "model.safetensors").read_bytes()[:8])[0]
        ]
    )
    weight_map = {key: shard for key in keys if key != "__metadata__"}
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _one_line_error(
        lambda: phi_models.from_pretrained(directory), "model.safetensors.index.json", "inside the model directory"
    )


INDEX_FILES = {
    "not-utf8": b'{"weight_map": {"a": "\xff.safetensors"}}',
    "map-not-a-dict": b'{"weight_map": ["model.safetensors"]}',
    "file-not-a-string": b'{"weight_map": {"lm_head.weight": 5}}',
    "deep-nesting": DEEP.encode(),
}


@pytest.mark.parametrize("case", sorted(INDEX_FILES), ids=sorted(INDEX_FILES))
def test_malformed_index_file(model_dir, tmp_path, case):
    directory = _copy(model_dir, tmp_path)
    (directory / "model.safetensors.index.json").write_bytes(INDEX_FILES[case])
    _one_line_error(lambda: phi_models.from_pretrained(directory), "model.safetensors.index.json")


SHARD_HEADERS = {
    "header-length-beyond-file": struct.pack("<Q", 10**12) + b"{}",
    "header-not-json": struct.pack("<Q", 8) + b"notjson!",
    "too-short": b"\x01\x02",
    "offsets-beyond-data": struct.pack("<Q", 70)
    + b'{"x":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    + b" " * 9,
}


@pytest.mark.parametrize("case", sorted(SHARD_HEADERS), ids=sorted(SHARD_HEADERS))
def test_malformed_safetensors_header(model_dir, tmp_path, case):
    directory = _copy(model_dir, tmp_path)
    (directory / "model.safetensors").write_bytes(SHARD_HEADERS[case])
    _one_line_error(lambda: phi_models.from_pretrained(directory), "model.safetensors")


def test_int64_weight_is_refused_not_cast(model_dir, tmp_path):
    from safetensors.torch import load_file

    directory = _copy(model_dir, tmp_path)
    tensors = load_file(directory / "model.safetensors")
    tensors["model.norm.weight"] = torch.full_like(tensors["model.norm.weight"], 7, dtype=torch.int64)
    save_file(tensors, directory / "model.safetensors")
    _one_line_error(lambda: phi_models.from_pretrained(directory), "model.norm.weight", "I64", "floating point")


@pytest.fixture
def tokenizer_dir(tmp_path):
    directory = tmp_path / "tok"
    directory.mkdir()
    shutil.copy(tiny_tokenizer_path(), directory / "tokenizer.json")
    return directory


TOKENIZER_FILES = {
    "tokenizer.json-garbage": ("tokenizer.json", b"\x00\xffnot a tokenizer", "tokenizer.json"),
    "tokenizer_config-not-utf8": ("tokenizer_config.json", b'{"eos_token": "\xff"}', "UTF-8"),
    "tokenizer_config-deep": ("tokenizer_config.json", DEEP.encode(), "nested too deeply"),
    "generation_config-eos-string": ("generation_config.json", b'{"eos_token_id": "x"}', "eos_token_id"),
    "config-bos-id-huge": ("config.json", b'{"bos_token_id": ' + b"9" * 10_000 + b"}", "config.json"),
    "config-bos-id-float": ("config.json", b'{"bos_token_id": 1.5}', "bos_token_id"),
}


@pytest.mark.parametrize("case", sorted(TOKENIZER_FILES), ids=sorted(TOKENIZER_FILES))
def test_malformed_tokenizer_files(tokenizer_dir, case):
    name, content, word = TOKENIZER_FILES[case]
    (tokenizer_dir / name).write_bytes(content)
    _one_line_error(lambda: phi_models.load_tokenizer(tokenizer_dir), word)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_device_is_a_phi_model_error():
    _one_line_error(lambda: phi_models.from_pretrained("tiny", device="cuda"), "no CUDA device", "cpu")


@pytest.mark.parametrize("device", ["banana", 5, "cuda:99"])
def test_bad_device_argument(device):
    _one_line_error(lambda: phi_models.from_pretrained("tiny", device=device), "device")
