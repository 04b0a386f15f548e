"""Adapter files: safetensors round trip, config metadata, shape-mismatch errors, atomic writes."""

import json
import os
import stat

import loralib
import pytest
import torch
import torch.nn as nn

import lora_core as lora
from lora_core import LoRAError


def _model(r=2, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    lora.inject(model, ["1", "3"], r=r, lora_alpha=4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_()
    return model


def test_round_trip_is_exact_and_carries_config(tmp_path):
    path = tmp_path / "adapter.safetensors"
    source = _model(seed=0)
    written = lora.save_adapter(source, path)
    assert set(written) == {"1.lora_A", "1.lora_B", "3.lora_A", "3.lora_B"}
    tensors, config = lora.read_adapter(path)
    assert config["r"] == 2 and config["lora_alpha"] == 4 and config["adapted"] == ["1", "3"]
    target = _model(seed=1)
    target.load_state_dict(source.state_dict(), strict=False)  # same base, different LoRA
    missing, unexpected = lora.load_adapter(target, path)
    assert missing == [] and unexpected == []
    for key, value in lora.lora_state_dict(source).items():
        assert torch.equal(target.state_dict()[key], value)
    x = torch.randint(0, 20, (2, 5))
    assert torch.equal(target(x), source(x))
    assert os.listdir(tmp_path) == ["adapter.safetensors"]  # no temporary file left behind


def test_explicit_config_is_stored(tmp_path):
    path = tmp_path / "a.safetensors"
    lora.save_adapter(_model(), path, config={"r": 2, "targets": ["1"], "note": "x"})
    assert lora.read_adapter(path)[1] == {"r": 2, "targets": ["1"], "note": "x"}


def test_shape_mismatch_names_every_key_with_both_shapes(tmp_path):
    path = tmp_path / "adapter.safetensors"
    lora.save_adapter(_model(r=4), path)
    target = _model(r=2)
    before = {k: v.clone() for k, v in lora.lora_state_dict(target).items()}
    with pytest.raises(LoRAError) as info:
        lora.load_adapter(target, path)
    message = str(info.value)
    for key, file_shape, model_shape in [
        ("1.lora_A", (4, 8), (2, 8)),
        ("1.lora_B", (8, 4), (8, 2)),
        ("3.lora_A", (4, 8), (2, 8)),
        ("3.lora_B", (4, 4), (4, 2)),
    ]:
        assert f"{key}: file {file_shape} vs model {model_shape}" in message
    for key, value in lora.lora_state_dict(target).items():  # nothing was loaded
        assert torch.equal(value, before[key])


def test_strict_false_ignores_extra_and_missing_keys_strict_true_refuses(tmp_path):
    path = tmp_path / "partial.safetensors"
    source = _model()
    partial = {k: v for k, v in lora.lora_state_dict(source).items() if k.startswith("1.")}
    partial["9.lora_A"] = torch.zeros(2, 2)
    from safetensors.torch import save_file

    save_file(partial, str(path))
    target = _model(seed=3)
    missing, unexpected = lora.load_adapter(target, path)
    assert missing == ["3.lora_A", "3.lora_B"] and unexpected == ["9.lora_A"]
    assert torch.equal(target[1].lora_A, source[1].lora_A)
    with pytest.raises(LoRAError, match="missing from file: \\['3.lora_A', '3.lora_B'\\]"):
        lora.load_adapter(_model(), path, strict=True)


def test_loralib_torch_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    reference = nn.Sequential(loralib.Linear(8, 8, r=2), nn.ReLU(), loralib.Linear(8, 4, r=2))
    with torch.no_grad():
        reference[0].lora_B.normal_()
    path = tmp_path / "lora.pt"
    torch.save(loralib.lora_state_dict(reference), path)
    ours = nn.Sequential(lora.Linear(8, 8, r=2), nn.ReLU(), lora.Linear(8, 4, r=2))
    ours.load_state_dict(reference.state_dict(), strict=False)
    lora.load_adapter(ours, path)
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), reference(x))


def test_save_without_lora_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(LoRAError, match="no LoRA parameters"):
        lora.save_adapter(nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(LoRAError, match="does not exist"):
        lora.read_adapter(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(LoRAError, match="not a readable safetensors file"):
        lora.read_adapter(bad)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "state.json"
    lora.atomic_write(path, lambda tmp: open(tmp, "w").write(json.dumps({"step": 1})))
    assert json.loads(path.read_text()) == {"step": 1}

    def failing(tmp):
        with open(tmp, "w") as handle:
            handle.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        lora.atomic_write(path, failing)
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_atomic_write_gives_files_normal_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        lora.atomic_write(tmp_path / "config.json", lambda tmp: open(tmp, "w").write("{}"))
        lora.save_adapter(_model(), tmp_path / "adapter.safetensors")
    finally:
        os.umask(old)
    for name in ("config.json", "adapter.safetensors"):  # as open() would: not mkstemp's 0o600
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(os.name == "nt", reason="folders cannot be fsynced on Windows")
def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd)))
    lora.atomic_write(tmp_path / "x.json", lambda tmp: open(tmp, "w").write("{}"))
    assert synced == [False, True]  # the data before the rename, the folder entry after it
