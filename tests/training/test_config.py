"""TrainConfig parsing: precedence, config files, demo defaults and one-line errors."""

import json

import pytest

from philora.training.config import (
    DEMO_DEFAULTS,
    FIELDS,
    TrainConfig,
    build_parser,
    dump_config,
    parse_config,
    read_config_file,
)
from philora.training.errors import TrainingError


def test_every_field_has_a_documented_flag():
    help_text = build_parser().format_help()
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in help_text
    for flag in [
        "--output-dir",
        "--max-steps",
        "--epochs",
        "--batch-size",
        "--grad-accum",
        "--lr",
        "--precision",
        "--quantize",
        "--lora-r",
        "--lora-alpha",
        "--lora-dropout",
        "--targets",
        "--max-seq-len",
        "--packing",
        "--eval-every",
        "--save-every",
        "--resume",
        "--seed",
    ]:
        assert flag in help_text


def test_recipe_defaults():
    cfg = parse_config(["--model", "phi-2", "--data", "roleplay"])
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lr, cfg.schedule) == (16, 16.0, 0.05, 2e-4, "cosine")
    assert cfg.warmup > 0 and cfg.targets is None and cfg.quantize == "none"


def test_no_arguments_is_the_demo():
    cfg = parse_config([])
    for key, value in DEMO_DEFAULTS.items():
        assert getattr(cfg, key) == value


def test_demo_flag_keeps_explicit_flags():
    cfg = parse_config(["--demo", "--max-steps", "3", "--no-packing"])
    assert cfg.max_steps == 3 and cfg.packing is False and cfg.model == "tiny"


def test_config_file_yaml_and_cli_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: phi-2\ndata: roleplay\nlora-r: 8\nlr: 1.0e-4\npacking: false\n")
    cfg = parse_config(["--config", str(path), "--lr", "3e-4"])
    assert cfg.lora_r == 8 and cfg.lr == 3e-4 and cfg.packing is False and cfg.model == "phi-2"


def test_config_file_json(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "tiny", "data": "samples/roleplay", "max_steps": 5}))
    assert parse_config(["--config", str(path)]).max_steps == 5


def test_config_file_unknown_keys_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny\nlearning_rate: 1e-4\nrank: 4\n")
    with pytest.raises(TrainingError, match=r"unknown key\(s\) learning_rate, rank") as info:
        read_config_file(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_config_file_bad_value_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora_r: sixteen\n")
    with pytest.raises(TrainingError, match=r"--lora-r \(config file .*\): expected int, got 'sixteen'"):
        read_config_file(str(path))


def test_missing_config_file():
    with pytest.raises(TrainingError, match="no such file"):
        parse_config(["--config", "/nonexistent/run.yaml"])


def test_model_required_outside_demo():
    with pytest.raises(TrainingError, match="--model is required"):
        parse_config(["--data", "roleplay"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grad-accum", "0"], "--grad-accum must be >= 1"),
        (["--lora-dropout", "1.5"], "--lora-dropout must be in"),
        (["--lr", "-1"], "--lr must be > 0"),
    ],
)
def test_range_errors(argv, message):
    with pytest.raises(TrainingError, match=message):
        parse_config(["--demo", *argv])


def test_bad_choice_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--demo", "--precision", "fp8"])
    assert "--precision" in capsys.readouterr().err


def test_dump_config_round_trips(tmp_path):
    cfg = parse_config(["--model", "tiny", "--data", "samples/roleplay", "--lora-r", "4", "--targets", "q_proj,fc1"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg, extra={"precision": "fp32"}))
    again = parse_config(["--config", str(path)])
    assert again == cfg and isinstance(again, TrainConfig)


def test_bundled_example_configs_parse():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = parse_config(["--config", str(path)])
        assert cfg.model and cfg.data and cfg.output_dir


def test_compile_is_off_by_default_and_refused_with_fsdp():
    assert parse_config(["--model", "tiny", "--data", "roleplay"]).compile is False
    assert parse_config(["--model", "tiny", "--data", "roleplay", "--compile"]).compile is True
    with pytest.raises(TrainingError, match="--compile is not supported together with --fsdp"):
        parse_config(["--model", "tiny", "--data", "roleplay", "--compile", "--fsdp"])
