"""Careless use of train: two runs on one directory, --overwrite on folders philora did not write,
updates that make the weights non-finite, out-of-range and oversized options, hostile --config files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from philora.training.checkpoint import list_checkpoints, load_training_state
from philora.training.config import parse_config
from philora.training.errors import TrainingError
from philora.training.run import main
from philora.training.rundir import LOCK_FILE, MARKER_FILE

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "12",
    "--max-seq-len",
    "48",
    "--batch-size",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
    "--val-fraction",
    "0",
    "--log-every",
    "1",
    "--lora-r",
    "2",
    "--targets",
    "q_proj,v_proj",
    "--pad-multiple",
    "16",
]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_second_run_on_a_directory_in_use_is_refused_naming_the_holder_then_resumes_after_sigkill(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "philora",
            "train",
            *ARGS,
            "--output-dir",
            str(out),
            "--max-steps",
            "100000",
            "--save-every",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not list_checkpoints(out):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first run saved no checkpoint in time"
            time.sleep(0.1)
        before = {p.name for p in (out / "checkpoints").iterdir()}
        for extra in ([], ["--resume", "latest"], ["--overwrite"]):
            capsys.readouterr()
            assert main([*ARGS, "--output-dir", str(out), "--max-steps", "3", *extra]) == 2
            line = _error_line(capsys)
            assert f"is in use by another run (pid {first.pid})" in line, line
        assert first.poll() is None  # the first run was not disturbed
        assert before <= {p.name for p in (out / "checkpoints").iterdir()} | {n for n in before if n.startswith(".")}
    finally:
        first.kill()  # SIGKILL: the lock file stays behind with the dead pid in it
        first.wait(timeout=60)
    assert (out / LOCK_FILE).read_text().strip() == str(first.pid)
    step = load_training_state(list_checkpoints(out)[-1])["step"]
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", str(step + 1), "--resume", "latest"]) == 0
    assert (out / "adapter.safetensors").is_file()


def test_overwrite_refuses_a_directory_philora_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "thesis.tex").write_text("years of work")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "1", "--overwrite"]) == 2
    line = _error_line(capsys)
    assert MARKER_FILE in line and "checkpoints" in line
    assert (out / "checkpoints" / "thesis.tex").read_text() == "years of work"
    assert (out / "tensorboard" / "notes.txt").read_text() == "keep"


def test_overwrite_removes_only_what_philora_wrote(tmp_path):
    out = tmp_path / "run"
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "2", "--save-every", "1"]) == 0
    assert (out / MARKER_FILE).is_file() and len(list_checkpoints(out)) == 2
    (out / "checkpoints" / "my-notes.txt").write_text("mine")
    (out / "mine.txt").write_text("mine too")
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "1", "--save-every", "0", "--overwrite"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]
    assert (out / "checkpoints" / "my-notes.txt").read_text() == "mine"
    assert (out / "mine.txt").read_text() == "mine too"


@pytest.mark.parametrize(
    "extra", [["--max-steps", "1"], ["--max-steps", "3", "--save-every", "1"]], ids=["final-adapter", "checkpoints"]
)
def test_update_that_makes_weights_non_finite_stops_before_saving(tmp_path, capsys, extra):
    # lr 1e308: the first Adam update is ~1e308 per weight, inf in fp32; before the check, step-1 was
    # checkpointed (and --max-steps 1 saved the adapter and exited 0) with inf weights.
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(out), "--lr", "1e308", *extra]) == 2
    line = _error_line(capsys)
    assert "the update of step 1 made LoRA parameter" in line and "no checkpoint had been saved yet" in line
    assert not (out / "adapter.safetensors").exists()
    assert list_checkpoints(out) == []


def test_resume_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "1", "--save-every", "1"]) == 0
    (checkpoint,) = list_checkpoints(out)
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "adapter.safetensors")
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    metadata = __import__("safetensors").safe_open(str(checkpoint / "adapter.safetensors"), "pt").metadata()
    save_file(tensors, checkpoint / "adapter.safetensors", metadata=metadata)
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "2", "--resume", "latest"]) == 2
    assert "NaN or infinite" in _error_line(capsys)


OPTIONS = {
    "pad-multiple-1e9": (["--pad-multiple", "1000000000"], "--pad-multiple"),
    "lora-r-100000": (["--lora-r", "100000"], "--lora-r"),
    "eval-batches-minus-1": (["--eval-batches", "-1"], "--eval-batches"),
    "eval-batches-0": (["--eval-batches", "0"], "--eval-batches"),
    "adam-eps-0": (["--adam-eps", "0"], "--adam-eps"),
    "adam-beta1-1": (["--adam-beta1", "1"], "--adam-beta1"),
    "adam-beta2-negative": (["--adam-beta2", "-0.5"], "--adam-beta2"),
    "weight-decay-negative": (["--weight-decay", "-1"], "--weight-decay"),
    "seed-huge": (["--seed", str(2**70)], "--seed"),
    "batch-size-huge": (["--batch-size", str(10**9)], "--batch-size"),
    "max-seq-len-huge": (["--max-seq-len", str(10**12)], "--max-seq-len"),
    "sample-tokens-huge": (["--sample-tokens", str(10**9)], "--sample-tokens"),
}


@pytest.mark.parametrize("case", sorted(OPTIONS), ids=sorted(OPTIONS))
def test_out_of_range_options_are_one_line_errors_before_any_work(tmp_path, capsys, case):
    extra, flag = OPTIONS[case]
    out = tmp_path / "run"
    capsys.readouterr()
    code = main([*ARGS, "--output-dir", str(out), "--max-steps", "1", *extra])
    assert code == 2
    assert flag in _error_line(capsys)
    assert not out.exists()  # refused while parsing: nothing was created


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--max-seq-len", "4096"], "longer than the model's 2048 positions"),
        (["--sample-tokens", "5000"], "--sample-tokens 5000 does not fit"),
        (["--lora-r", "300"], "larger than the model's hidden size 256"),
    ],
    ids=["max-seq-len-above-positions", "sample-tokens-above-positions", "lora-r-above-width"],
)
def test_options_checked_against_the_model_before_training(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(out), "--max-steps", "1", *extra]) == 2
    assert words in _error_line(capsys)
    assert not (out / "metrics.jsonl").exists()  # refused before the first step


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capsys.readouterr()
    assert main([*ARGS, "--output-dir", str(blocker / "run"), "--max-steps", "1"]) == 2
    assert "cannot be created" in _error_line(capsys)


def _config(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


ALIAS_BOMB = (
    b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
        for i in range(8)
    )
    + b"lora_r: *i\n"
)

CONFIG_FILES = {
    "yaml-alias-bomb": ("c.yaml", ALIAS_BOMB, "alias bomb"),
    "yaml-deep-nesting": ("c.yaml", b"lora_r: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "c.yaml"),
    "yaml-duplicate-key": ("c.yaml", b"lora_r: 8\nlr: 0.1\nlora_r: 64\n", "appears twice"),
    "yaml-two-spellings": ("c.yaml", b"lora_r: 8\nlora-r: 64\n", "given twice"),
    "yaml-not-utf8": ("c.yaml", b'lora_r: 8\nsample_prompt: "\xff\xfe"\n', "UTF-8"),
    "yaml-huge-integer": ("c.yaml", b"lora_r: " + b"9" * 5000 + b"\n", "c.yaml"),
    "yaml-list-value": ("c.yaml", b"lora_r: [1, 2]\n", "--lora-r"),
    "yaml-not-a-mapping": ("c.yaml", b"- 1\n- 2\n", "mapping"),
    "json-duplicate-key": ("c.json", b'{"lora_r": 8, "lora_r": 64}', "appears twice"),
    "json-deep-nesting": ("c.json", b'{"lora_r": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "c.json"),
    "json-huge-integer": ("c.json", b'{"lora_r": ' + b"9" * 5000 + b"}", "c.json"),
    "json-not-utf8": ("c.json", b'{"sample_prompt": "\xc3\x28"}', "UTF-8"),
    "json-broken": ("c.json", b'{"lora_r": ', "not valid JSON"),
    "too-large": ("c.yaml", b"# " + b"x" * (2 << 20) + b"\n", "too large"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES), ids=sorted(CONFIG_FILES))
def test_hostile_config_file_is_one_line_error_quickly(tmp_path, case):
    name, content, words = CONFIG_FILES[case]
    path = _config(tmp_path, name, content)
    started = time.monotonic()
    with pytest.raises(TrainingError) as err:
        parse_config(["--config", path, "--model", "tiny", "--data", "samples/roleplay"])
    assert time.monotonic() - started < 10  # the alias bomb took 50 s and then a MemoryError
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)


def test_config_directory_given_as_file(tmp_path):
    with pytest.raises(TrainingError, match="is a directory"):
        parse_config(["--config", str(tmp_path), "--model", "tiny", "--data", "samples/roleplay"])


def test_plain_config_file_still_reads(tmp_path):
    path = _config(tmp_path, "c.yaml", b"lora-r: &rank 8\nlr: 0.001\npacking: false\nbatch_size: *rank\n")
    cfg = parse_config(["--config", path, "--model", "tiny", "--data", "samples/roleplay"])
    assert (cfg.lora_r, cfg.lr, cfg.packing, cfg.batch_size) == (8, 0.001, False, 8)  # a small alias is fine
