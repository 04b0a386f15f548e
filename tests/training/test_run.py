"""End-to-end runs of train.main (training/run.py) on the tiny model and the bundled roleplay sample (in-process)."""

import json
import signal

import pytest
import torch

import lora_core
import phi_models
import philora.training.loop as loop_module
from philora import data
from philora.training.checkpoint import list_checkpoints, load_training_state
from philora.training.loop import evaluate
from philora.training.precision import Precision
from philora.training.run import main

BASE = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "48",
    "--max-seq-len",
    "128",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "8",
    "--device",
    "cpu",
    "--sample-tokens",
    "0",
    "--log-every",
    "1",
    "--lr",
    "3e-3",
    "--warmup",
    "2",
]


def _run(out, *extra):
    return main([*BASE, "--output-dir", str(out), *extra])


def _records(out, kind):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_loss_falls_and_saved_adapter_reproduces_final_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "24", "--eval-every", "12", "--save-every", "12", "--precision", "fp32") == 0
    evals = _records(out, "eval")
    assert [e["step"] for e in evals] == [0, 12, 24]
    # stated margin: 24 steps at lr 3e-3 take the random-init tiny model's eval loss down by > 1 nat
    assert evals[-1]["loss"] < evals[0]["loss"] - 1.0
    train = _records(out, "train")
    assert len(train) == 24 and all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in train)
    printed = capsys.readouterr().out
    assert "final eval loss" in printed and "perplexity" in printed and "tok/s" in printed
    resolved = (out / "train_config.yaml").read_text()
    assert "lora_r: 16" in resolved and "targets: q_proj,k_proj,v_proj,dense,fc1,fc2" in resolved

    # a fresh model + LoRA, adapter loaded with strict=False, gives the final eval loss again
    tok = phi_models.load_tokenizer("tiny")
    prepared = data.prepare("samples/roleplay", tok, max_seq_len=128, limit=48, val_fraction=0.05, seed=42)
    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], r=16, lora_alpha=16)
    missing, unexpected = lora_core.load_adapter(model, out / "adapter.safetensors", strict=False)
    assert not missing and not unexpected
    val = data.make_batches(
        prepared.val,
        batch_size=8,
        max_seq_len=128,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        shuffle=False,
        seed=42,
    )
    again = evaluate(model, val, precision=Precision("fp32", torch.device("cpu")))
    assert again["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-6)


def test_resume_after_interrupt_is_bit_exact(tmp_path, monkeypatch, capsys):
    args = [
        "--max-steps",
        "8",
        "--save-every",
        "3",
        "--eval-every",
        "4",
        "--precision",
        "fp32",
        "--lora-dropout",
        "0.1",
    ]
    straight = tmp_path / "straight"
    assert _run(straight, *args) == 0

    # interrupt the second run right after its 5th optimizer step with a real SIGINT
    calls = {"n": 0}
    real_step = loop_module.optimizer_step

    def step_then_interrupt(*a, **k):
        norm = real_step(*a, **k)
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)
        return norm

    monkeypatch.setattr(loop_module, "optimizer_step", step_then_interrupt)
    stopped = tmp_path / "stopped"
    assert _run(stopped, *args) == 130
    assert "SIGINT received: checkpoint saved" in capsys.readouterr().out
    assert list_checkpoints(stopped)[-1].name == "step-000005"
    monkeypatch.setattr(loop_module, "optimizer_step", real_step)
    assert _run(stopped, *args, "--resume", "latest") == 0

    losses = lambda out: [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in _records(out, "train")]  # noqa: E731
    assert losses(stopped) == losses(straight)  # exact float equality, step by step
    assert [r["loss"] for r in _records(stopped, "eval")][-1] == [r["loss"] for r in _records(straight, "eval")][-1]
    assert len(list_checkpoints(stopped)) == 3  # keep_last default


def test_grad_accum_4_equals_batch_4_on_tiny(tmp_path):
    tok = phi_models.load_tokenizer("tiny")
    prepared = data.prepare("samples/roleplay", tok, max_seq_len=96, limit=8, seed=0)
    examples = prepared.train[:4]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    one = data.make_batches(examples, batch_size=4, max_seq_len=96, pad_id=pad, packing=False, shuffle=False)
    four = data.make_batches(examples, batch_size=1, max_seq_len=96, pad_id=pad, packing=False, shuffle=False)
    assert len(one) == 1 and len(four) == 4
    grads = []
    for batches in (one, four):
        torch.manual_seed(0)
        model = phi_models.from_pretrained("tiny")
        lora_core.inject(model, targets=["q_proj", "v_proj", "fc1"], r=4, lora_alpha=8)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # non-zero B so every LoRA factor gets a gradient
                torch.nn.init.normal_(p, std=0.02)
        model.train()
        loop_module.accumulate_window(model, batches, precision=Precision("fp32", torch.device("cpu")))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    # fp32 tolerance; measured: max |difference| 1.5e-8 against gradients up to 2.2e-2 (only the
    # summation order differs: one batch's reductions vs four accumulated backward passes).
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "extra",
    [
        ["--quantize", "nf4", "--precision", "bf16"],
        ["--precision", "bf16"],
        ["--precision", "fp32", "--gradient-checkpointing", "--optimizer", "adamw8bit"],
    ],
    ids=["nf4", "bf16", "checkpointing-adamw8bit"],
)
def test_quantized_and_bf16_runs_train(tmp_path, extra):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "8", "--eval-every", "8", "--save-every", "0", *extra) == 0
    evals = _records(out, "eval")
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.3
    assert (out / "adapter.safetensors").is_file()


def test_compile_flag_compiles_the_model_layers(tmp_path, monkeypatch):
    # The compiled numerics are checked against eager in tests/phi_models/test_phi_model.py; a real
    # inductor build costs over a minute here, so this checks only that --compile reaches the model.
    calls = []
    monkeypatch.setattr(phi_models.PhiForCausalLM, "compile_layers", lambda self, **options: calls.append(self))
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "1", "--eval-every", "0", "--save-every", "0", "--compile") == 0
    assert len(calls) == 1 and isinstance(calls[0], phi_models.PhiForCausalLM)
    assert (out / "adapter.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "extra",
    [
        ["--precision", "fp16"],
        ["--precision", "bf16"],
        ["--quantize", "nf4", "--precision", "bf16"],
    ],
    ids=["fp16-grad-scaler", "bf16-autocast", "nf4"],
)
def test_runs_train_on_cuda(tmp_path, extra):
    out = tmp_path / "run"
    assert _run(out, "--device", "cuda", "--max-steps", "8", "--eval-every", "8", "--save-every", "8", *extra) == 0
    evals = _records(out, "eval")
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.3
    assert (out / "adapter.safetensors").is_file()
    scaler = load_training_state(list_checkpoints(out)[-1])["scaler"]
    assert (scaler is not None) == ("fp16" in extra)  # the grad scaler's state is saved for resuming
    assert all(r["peak_mem_mb"] > 0 for r in _records(out, "train"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = loop_module.micro_batch_loss
    calls = {"n": 0}

    def poisoned(model, batch, chunk):
        calls["n"] += 1
        loss = real(model, batch, chunk)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop_module, "micro_batch_loss", poisoned)
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "4", "--save-every", "1", "--eval-every", "0", "--precision", "fp32") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before it are the progress bar
    assert err.startswith("error: ") and "loss became nan at step 3" in err and "step-000002" in err
    assert [p.name for p in list_checkpoints(out)] == ["step-000001", "step-000002"]
    assert load_training_state(list_checkpoints(out)[-1])["step"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "phi-9"], "unknown model 'phi-9': use a preset (tiny"),
        (["--data", "nowhere"], "unknown data source 'nowhere'"),
        (["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
    ],
)
def test_bad_inputs_one_line_errors(tmp_path, capsys, argv, message):
    assert main([*BASE, "--output-dir", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_config_file_unknown_keys_error(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: tiny\nlearning-rate: 0.1\n")
    assert main(["--config", str(cfg)]) == 2
    assert "unknown key(s) learning-rate" in capsys.readouterr().err


def test_output_dir_with_another_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--max-steps", "1", "--eval-every", "0", "--precision", "fp32") == 0
    capsys.readouterr()
    assert _run(out, "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume latest" in err and "--overwrite" in err
    assert _run(out, "--max-steps", "1", "--eval-every", "0", "--precision", "fp32", "--overwrite") == 0
    assert [r["step"] for r in _records(out, "train")] == [1]


def test_max_time_stops_with_a_checkpoint_and_resume_finishes(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--max-steps", "3", "--eval-every", "0", "--precision", "fp32"]
    assert _run(out, *common, "--max-time", "0.00001") == 0
    assert "stopped by --max-time after step 1" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]
    assert _run(out, *common, "--resume", "latest") == 0
    assert [r["step"] for r in _records(out, "train")] == [1, 2, 3]


def test_epochs_limit_counts_accumulation_windows(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--epochs", "1.5", "--grad-accum", "5", "--eval-every", "0", "--precision", "fp32") == 0
    tok = phi_models.load_tokenizer("tiny")
    prepared = data.prepare("samples/roleplay", tok, max_seq_len=128, limit=48, val_fraction=0.05, seed=42)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    per_epoch = len(data.make_batches(prepared.train, batch_size=4, max_seq_len=128, pad_id=pad, seed=42))
    windows = -(-per_epoch // 5)
    train = _records(out, "train")
    assert len(train) == -(-3 * windows // 2)  # ceil(1.5 epochs of windows)
    assert [r["epoch"] for r in train].count(0) == windows and train[-1]["epoch"] == 1


def test_resume_refuses_changed_options_and_accepts_allowed_ones(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--eval-every", "0", "--precision", "fp32", "--save-every", "2"]
    assert _run(out, *common, "--max-steps", "2") == 0
    stored = load_training_state(list_checkpoints(out)[-1])["run_config"]
    assert stored["batch_size"] == 4 and stored["targets"] == "q_proj,k_proj,v_proj,dense,fc1,fc2"
    capsys.readouterr()

    # each locked option is named with both values; nothing is trained or written
    assert (
        _run(out, *common, "--max-steps", "4", "--resume", "latest", "--batch-size", "2", "--seed", "7", "--no-packing")
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "options differ from the run being resumed" in err
    assert "--batch-size 2 (checkpoint: 4)" in err and "--seed 7 (checkpoint: 42)" in err
    assert "--packing false (checkpoint: true)" in err
    # the resolved target list counts, not how it was given
    assert _run(out, *common, "--max-steps", "4", "--resume", "latest", "--targets", "q_proj,v_proj") == 2
    assert "--targets q_proj,v_proj (checkpoint: q_proj,k_proj,v_proj,dense,fc1,fc2)" in capsys.readouterr().err
    assert [r["step"] for r in _records(out, "train")] == [1, 2]

    # run length, output, logging and evaluation may change: the run continues
    assert (
        _run(
            out,
            *common,
            "--max-steps",
            "4",
            "--resume",
            "latest",
            "--keep-last",
            "1",
            "--log-every",
            "2",
            "--eval-batch-size",
            "4",
            "--targets",
            "q_proj,k_proj,v_proj,dense,fc1,fc2",
        )
        == 0
    )
    assert "resuming from" in capsys.readouterr().out
    assert [r["step"] for r in _records(out, "train")] == [1, 2, 4]
    assert [p.name for p in list_checkpoints(out)] == ["step-000004"]
