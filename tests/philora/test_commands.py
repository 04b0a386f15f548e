"""philora export / merge / push / train --adapter through the real command entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import lora_core
from lora_core.linear4bit import keep_standard_4bit_layout
from philora.cli import main
from philora.model_card import parse_front_matter
from philora.runs import load_for_inference
from tests.philora.conftest import TRAIN_ARGS
from tests.philora.hub_server import FakeHub

REPO = Path(__file__).resolve().parents[2]
INPUT = torch.tensor([[5, 17, 99, 3, 64, 8, 120, 41]])


@torch.no_grad()
def _logits(model):
    out = model(INPUT)
    return out.logits if hasattr(out, "logits") else out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("philora: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_help_lists_every_subcommand_and_defaults():
    top = subprocess.run([sys.executable, "-m", "philora", "--help"], cwd=REPO, capture_output=True, text=True)
    assert top.returncode == 0 and all(name in top.stdout for name in ("train", "export", "merge", "push"))
    sub = subprocess.run([sys.executable, "-m", "philora", "merge", "--help"], cwd=REPO, capture_output=True, text=True)
    assert sub.returncode == 0 and "(default: auto)" in sub.stdout and "(default: cpu)" in sub.stdout


def test_not_a_run_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "philora", "export", str(tmp_path), "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"{tmp_path}: not a run directory (no train_config.yaml)" in proc.stderr


def test_export_writes_peft_dir_equal_to_the_runs(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "peft")]) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"
    assert config["target_modules"] == ["dense", "fc1", "q_proj", "v_proj"]
    assert (tmp_path / "peft" / "adapter_model.safetensors").read_bytes() == (
        tiny_run / "peft" / "adapter_model.safetensors"
    ).read_bytes()
    # an existing, non-empty --out is never overwritten
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "peft")]) == 2
    assert "exists and is not an empty directory" in _one_line_error(capsys)


def test_merge_loads_in_transformers_with_our_logits(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM

    assert main(["merge", str(tiny_run), "--out", str(tmp_path / "merged")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ours = load_for_inference(tiny_run, device="cpu")
    assert (_logits(merged) - _logits(ours.model)).abs().max() < 1e-4
    again = load_for_inference(tmp_path / "merged", device="cpu")  # a merged export is a model, template kept
    assert again.template == "phi3" and (_logits(again.model) - _logits(ours.model)).abs().max() < 1e-4


def test_merge_bf16_and_unsupported_peft_option(tiny_run, tmp_path, capsys):
    assert main(["merge", str(tiny_run), "--out", str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    index = json.loads((tmp_path / "bf16" / "model.safetensors.index.json").read_text())
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16" and index["weight_map"]
    bad = tmp_path / "bad_peft"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes((tiny_run / "peft" / "adapter_model.safetensors").read_bytes())
    config = json.loads((tiny_run / "peft" / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps(dict(config, layer_replication=[[0, 2], [1, 3]])))
    assert main(["merge", "tiny", "--adapter", str(bad), "--out", str(tmp_path / "m2")]) == 2
    assert "layer_replication=[[0, 2], [1, 3]] (layer replication) is not supported" in _one_line_error(capsys)


def test_train_continues_an_imported_peft_adapter(tiny_run, tmp_path):
    out = tmp_path / "continued"
    args = [a for a in TRAIN_ARGS if a != "q_proj,v_proj,dense,fc1" and a != "--targets"]
    adapter = str(tiny_run / "peft")
    assert main(["train", *args, "--max-steps", "1", "--adapter", adapter, "--output-dir", str(out)]) == 0
    start = lora_core.read_adapter(tiny_run / "adapter.safetensors")[0]
    after = lora_core.read_adapter(out / "adapter.safetensors")[0]
    assert start.keys() == after.keys()  # the imported layout, not the default targets
    assert any(not torch.equal(start[k], after[k]) for k in start)  # and it trained


def test_push_uploads_adapter_and_card_to_a_local_endpoint(tiny_run, monkeypatch):
    hub = FakeHub()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        assert main(["push", str(tiny_run), "--repo", "alice/tiny-roleplay-lora", "--private"]) == 0
        files = hub.repos["alice/tiny-roleplay-lora"]
        assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
        assert files["adapter_model.safetensors"] == (tiny_run / "peft" / "adapter_model.safetensors").read_bytes()
        card = files["README.md"].decode()
        meta = parse_front_matter(card)
        assert meta["base_model"] == "tiny" and meta["library_name"] == "peft" and meta["license"] == "mit"
        assert "lora" in meta["tags"] and "perplexity" in card and "PeftModel.from_pretrained" in card
        assert hub.validated == [card] and hub.created[0]["visibility"] == "private"
        assert all(auth == "Bearer hf_local_test_token" for method, path, auth in hub.requests if method == "POST")
        # --merged uploads a transformers checkpoint instead
        assert main(["push", str(tiny_run), "--repo", "alice/tiny-merged", "--merged"]) == 0
        merged = hub.repos["alice/tiny-merged"]
        assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "README.md"} <= set(merged)
        assert parse_front_matter(merged["README.md"].decode())["library_name"] == "transformers"
    finally:
        hub.close()


def test_push_without_network_fails_fast_in_one_line(tiny_run, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    assert main(["push", str(tiny_run), "--repo", "alice/x"]) == 2
    assert time.monotonic() - started < 10
    assert "cannot reach the hub at http://127.0.0.1:" in _one_line_error(capsys)
    assert main(["push", str(tiny_run), "--repo", "not-a-repo-id"]) == 2
    assert "expected USER/NAME" in _one_line_error(capsys)


def test_merge_of_a_qlora_run_dequantizes_and_reports_the_difference(tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    run = tmp_path / "qlora"
    assert main(["train", *TRAIN_ARGS, "--max-steps", "1", "--quantize", "nf4", "--output-dir", str(run)]) == 0
    assert (run / "peft" / "adapter_config.json").is_file()
    capsys.readouterr()
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    printed = capsys.readouterr().out
    assert "the base was trained in 4 bits (nf4)" in printed and "relative Frobenius" in printed
    info = json.loads((tmp_path / "merged" / "philora.json").read_text())
    assert info["quantized_base"] == "nf4" and info["difference_vs_dense_merge"]["max_abs"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    four_bit = load_for_inference(run, device="cpu").model  # what was trained: 4-bit base + adapter
    keep_standard_4bit_layout(four_bit)  # bitsandbytes' CPU inference repacking computes in bf16; training did not
    assert (_logits(merged) - _logits(four_bit)).abs().max() < 1e-4
