"""Shared pieces for the deploy tests: llama.cpp's own converters (from the llama-cpp-python source
distribution on PyPI, downloaded once and cached), tiny random Phi checkpoints, and a GGUF file reader."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
REALCASES = REPO.parent / "shared" / "realcases"
# What the tests run from the sdist; nothing of it is ever copied into this repository.
_MEMBERS = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")


@pytest.fixture(scope="session")
def llama_cpp_dir(pytestconfig) -> Path:
    """llama.cpp's converters and gguf-py from `pip download --no-binary :all: --no-deps llama-cpp-python`.

    Cached in pytest's cache folder (.pytest_cache, never committed) so the 75 MB download happens once;
    skipped, with the reason, only when the download itself fails.
    """
    cache = Path(pytestconfig.cache.mkdir("llama_cpp_sdist"))
    ready = cache / "llama.cpp" / "convert_lora_to_gguf.py"
    if ready.is_file():
        return ready.parent
    tarballs = sorted(cache.glob("llama_cpp_python-*.tar.gz"))
    if not tarballs:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--quiet",
            "-d",
            str(cache),
            "llama-cpp-python",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        tarballs = sorted(cache.glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not tarballs:
            pytest.skip(f"could not download the llama-cpp-python sdist: {(done.stderr or done.stdout)[-300:]}")
    target = cache / "llama.cpp"
    with tarfile.open(tarballs[-1]) as archive:
        for member in archive.getmembers():
            inner = member.name.partition("/vendor/llama.cpp/")[2]
            if inner and inner.startswith(_MEMBERS) and (member.isfile() or member.isdir()):
                member.name = inner
                if hasattr(tarfile, "data_filter"):  # refuses links and paths leaving the target
                    archive.extract(member, target, filter="data")
                else:
                    archive.extract(member, target)
    return target


def run_converter(llama_cpp: Path, script: str, *args: str) -> None:
    """Run one of llama.cpp's converters (with its own gguf-py) and fail with its output if it fails."""
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py") + os.pathsep + str(llama_cpp))
    done = subprocess.run(
        [sys.executable, str(llama_cpp / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=llama_cpp,
        timeout=600,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def read_gguf(path: Path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> (type name, ggml shape, raw bytes)) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        fields[key] = (tuple(t.name for t in field.types), value)
    tensors = {
        t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), bytes(t.data.tobytes())) for t in reader.tensors
    }
    return fields, tensors


def dequantized(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file as float32 in PyTorch (out, in) order."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))
        out[t.name] = torch.from_numpy(values.astype("float32").reshape(shape).copy())
    return out


def small_hf_model(kind: str, vocab: int, seed: int = 0, **overrides):
    """A random transformers phi-2- or Phi-3-shaped model (2 layers, width 64, GQA for Phi-3)."""
    from transformers import Phi3Config, Phi3ForCausalLM, PhiConfig, PhiForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    if kind == "phi":
        config = PhiConfig(**common, partial_rotary_factor=0.5, max_position_embeddings=256, **overrides)
        cls = PhiForCausalLM
    else:
        config = Phi3Config(**common, num_key_value_heads=2, max_position_embeddings=256, **overrides)
        cls = Phi3ForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(config).eval()
        with torch.no_grad():  # make biases and norms non-trivial so a mix-up would show
            for _name, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    return model


def realcase(folder: str) -> Path:
    """A /work/shared/realcases folder, or a skip saying it is absent."""
    path = REALCASES / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real tokenizer files live outside the repository)")
    return path


def model_with_random_lora(hf_dir, targets, *, r: int, alpha: float, seed: int, scale: float, use_rslora=False):
    """Our model of the HF checkpoint with random (non-zero) LoRA factors on ``targets``, in eval mode."""
    import torch

    import lora_core
    import phi_models

    model = phi_models.from_pretrained(hf_dir)
    lora_core.inject(model, targets, r=r, lora_alpha=alpha, use_rslora=use_rslora)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()
