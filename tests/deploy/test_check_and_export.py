"""philora check (each target's refusals, with the fix) and philora export's deploy formats on a real tiny run."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess

import pytest
import torch

import lora_core
import phi_models
from tests.deploy.conftest import dequantized

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from philora.training.run import main

    out = tmp_path_factory.mktemp("deploy") / "run"
    code = main(
        [
            "--model",
            "tiny",
            "--data",
            "samples/roleplay",
            "--limit",
            "16",
            "--max-seq-len",
            "96",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--sample-tokens",
            "0",
            "--max-steps",
            "1",
            "--eval-every",
            "0",
            "--save-every",
            "0",
            "--precision",
            "fp32",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    return out


def philora(*args: str) -> subprocess.CompletedProcess:
    """The philora CLI in-process (same code path as `python -m philora`, without a fresh interpreter)."""
    from philora.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["philora", *args], code, out.getvalue(), err.getvalue())


def run_with_adapter(trained_run, tmp_path, targets, **options):
    """A copy of the run whose adapter is replaced by one the targets may refuse."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets, **options)
    lora_core.save_adapter(model, run / "adapter.safetensors")
    return run


def test_the_trained_run_is_deployable_everywhere(trained_run):
    done = philora("check", str(trained_run))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vllm: deployable" in done.stdout and "ollama: deployable" in done.stdout


@pytest.mark.parametrize(
    "case, targets, options, refused, message",
    [
        ("dora", ["dense"], dict(r=4, use_dora=True), {"vllm", "llama.cpp", "ollama"}, "DoRA"),
        ("rank 1024", ["fc1"], dict(r=1024), {"vllm"}, "rank 1024 is above vLLM's maximum"),
        ("lm_head", ["lm_head"], dict(r=4), {"vllm", "llama.cpp", "ollama"}, "lm_head"),
    ],
)
def test_check_refuses_with_the_fix(trained_run, tmp_path, case, targets, options, refused, message):
    run = run_with_adapter(trained_run, tmp_path, targets, **options)
    done = philora("check", str(run))
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line.startswith("refused by ")]
    assert {line[len("refused by ") :].split(":")[0] for line in lines} == refused
    assert all("; fix: " in line for line in lines) and any(message in line for line in lines)
    assert "peft: deployable" in done.stdout
    single = philora("check", str(run), "--target", sorted(refused)[0])
    assert single.returncode == 1 and single.stdout.count("refused by ") >= 1


def test_export_gguf_lora_and_refusal(trained_run, tmp_path):
    out = tmp_path / "adapter.gguf"
    done = philora("export", str(trained_run), "--format", "gguf-lora", "--out", str(out))
    assert done.returncode == 0, done.stderr
    tensors, config = lora_core.read_adapter(trained_run / "adapter.safetensors")
    values = dequantized(out)
    A = tensors["model.layers.0.self_attn.qkv_proj.lora_A"]  # the q group of the run's q/k/v slices
    torch.testing.assert_close(values["blk.0.attn_q.weight.lora_a"], A[: config["r"]])
    bad = run_with_adapter(trained_run, tmp_path / "dora", ["dense"], r=4, use_dora=True)
    refused = philora("export", str(bad), "--format", "gguf-lora", "--out", str(tmp_path / "x.gguf"))
    assert refused.returncode == 2 and "DoRA" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


def test_export_merged_gguf_holds_the_merged_weights(trained_run, tmp_path):
    from lora_core import merge_and_unload
    from phi_models.adapters import attach_adapter

    out = tmp_path / "model.gguf"
    done = philora("export", str(trained_run), "--format", "gguf", "--dtype", "f32", "--out", str(out))
    assert done.returncode == 0, done.stderr
    model = phi_models.from_pretrained("tiny")
    attach_adapter(model, trained_run / "adapter.safetensors")
    merge_and_unload(model)
    q_rows = model.config.qkv_slices["q_proj"]
    values = dequantized(out)
    assert torch.equal(values["blk.1.attn_q.weight"], model.model.layers[1].self_attn.qkv_proj.weight[:q_rows])
    assert torch.equal(values["token_embd.weight"], model.model.embed_tokens.weight)


def test_export_ollama_and_vllm(trained_run, tmp_path):
    out = tmp_path / "ollama"
    done = philora("export", str(trained_run), "--format", "ollama", "--out", str(out), "--system", "Stay in role.")
    assert done.returncode == 0, done.stderr
    text = (out / "Modelfile").read_text()
    assert text.startswith('FROM ./base.gguf\nADAPTER ./adapter.gguf\nTEMPLATE """{{ range .Messages }}<|{{ .Role }}|>')
    assert 'PARAMETER stop "<|endoftext|>"' in text and 'PARAMETER stop "<|user|>"' in text
    assert text.endswith('SYSTEM """Stay in role."""\n')
    assert (out / "base.gguf").stat().st_size > (out / "adapter.gguf").stat().st_size > 0
    vllm = philora("export", str(trained_run), "--format", "vllm", "--name", "roleplay")
    assert vllm.returncode == 0, vllm.stderr
    assert vllm.stdout.strip().startswith("vllm serve tiny --enable-lora --lora-modules roleplay=")
    assert vllm.stdout.strip().endswith("--max-lora-rank 16")
