"""The run directory as the handle for everything after training.

    run = open_run("runs/phi-2-roleplay")          # RunInfo, or RunError (one line) if it is not a run
    loaded = load_for_inference("runs/phi-2-roleplay")             # base + adapter, tokenizer, template
    loaded = load_for_inference("phi-2", adapter="some/peft_dir")  # a model plus our file or a PEFT dir
    loaded = load_for_inference("exports/merged")                  # a merged export is just a model

A run directory holds ``train_config.yaml`` (the options plus a ``resolved:`` section written by
``training.run_record``), ``adapter.safetensors`` (the final adapter), ``peft/`` (the same adapter in PEFT's
format), ``metrics.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "train_config.yaml"
FINAL_ADAPTER = "adapter.safetensors"
METRICS_FILE = "metrics.jsonl"
EXPORT_INFO_FILE = "philora.json"  # written next to a merged export: template and stop tokens
QUANTIZE_CHOICES = (None, "none", "nf4", "fp4")


class RunError(ValueError):
    """A path is not a usable run directory (or a model/adapter cannot be loaded); the message is one line."""


@dataclass
class RunInfo:
    """What a run directory says about its base model, settings and adapter."""

    path: Path
    config: dict[str, Any]
    base_model: str
    revision: str | None
    dtype: str | None
    quantize: str | None
    template: str | None
    lora: dict[str, Any]
    adapter_file: Path
    peft_dir: Path | None
    base_model_repo: str | None = None
    tokenizer: str | None = None
    targets: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    final_eval: dict[str, Any] | None = None

    @property
    def resolved(self) -> dict[str, Any]:
        """The ``resolved:`` section of train_config.yaml ({} for runs written before it existed)."""
        return dict(self.config.get("resolved") or {})


@dataclass
class Loaded:
    """A model ready for inference, its tokenizer, the prompt template name (or None) and the run (or None)."""

    model: Any
    tokenizer: Any
    template: str | None
    run: RunInfo | None


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a train_config.yaml."""
    return (Path(path) / CONFIG_FILE).is_file()


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / CONFIG_FILE
    try:
        raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RunError(f"{config_file}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw.get("model"):
        raise RunError(f"{config_file}: not a philora train_config.yaml (no 'model' key)")
    return raw


def _final_eval(path: Path) -> dict[str, Any] | None:
    """The last evaluation record in metrics.jsonl, or None."""
    metrics = path / METRICS_FILE
    if not metrics.is_file():
        return None
    last = None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "eval":
            last = record
    return last


def _adapter_of(path: Path) -> Path:
    final = path / FINAL_ADAPTER
    if final.is_file():
        return final
    from philora.training.checkpoint import ADAPTER_FILE, list_checkpoints

    checkpoints = list_checkpoints(path)
    if checkpoints:
        return checkpoints[-1] / ADAPTER_FILE
    raise RunError(
        f"{path}: the run has no {FINAL_ADAPTER} and no complete checkpoint; finish it with "
        f"`philora train --resume latest --output-dir {path}`"
    )


def open_run(path: str | Path) -> RunInfo:
    """Read a run directory; raise RunError naming the path if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    if not (path / CONFIG_FILE).is_file():
        raise RunError(f"{path}: not a run directory (no {CONFIG_FILE}); pass the --output-dir of a training run")
    config = _read_config(path)
    resolved = dict(config.get("resolved") or {})
    adapter_file = _adapter_of(path)
    lora = dict(resolved.get("lora") or {})
    if not lora:  # a run from before the resolved section: the adapter file carries its LoRA config
        from lora_core import LoRAError, read_adapter

        try:
            lora = {k: v for k, v in read_adapter(adapter_file)[1].items() if k != "base_model"}
        except LoRAError as err:
            raise RunError(str(err)) from None
    base_model = resolved.get("base_model") or config["model"]
    peft_dir = path / resolved.get("peft_dir", "peft")
    quantize = resolved.get("quantize", config.get("quantize"))
    dtype = resolved.get("dtype", config.get("dtype"))
    return RunInfo(
        path=path,
        config=config,
        base_model=str(base_model),
        revision=resolved.get("revision", config.get("revision")),
        dtype=None if dtype in (None, "auto") else str(dtype),
        quantize=None if quantize in (None, "none") else str(quantize),
        template=resolved.get("template", config.get("template")),
        lora=lora,
        adapter_file=adapter_file,
        peft_dir=peft_dir if (peft_dir / "adapter_config.json").is_file() else None,
        base_model_repo=resolved.get("base_model_repo"),
        tokenizer=resolved.get("tokenizer") or config.get("tokenizer") or str(base_model),
        targets=list(resolved.get("targets") or lora.get("adapted") or []),
        stop_token_ids=list(resolved.get("stop_token_ids") or []),
        final_eval=_final_eval(path),
    )


def _default_device(device):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_quantize(quantize: str | None) -> None:
    if quantize not in QUANTIZE_CHOICES:
        raise RunError(f"quantize={quantize!r}: use none, nf4 or fp4")


def load_for_inference(
    target: str | Path,
    *,
    adapter: str | Path | None = None,
    quantize: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> Loaded:
    """A model in eval mode with its adapter, tokenizer and template.

    ``target``: a run directory (base, revision, dtype, quantization and adapter come from it), or a model
    (preset, hub id, local directory, merged export). ``adapter``: our adapter file or a PEFT adapter
    directory, loaded on top of the model (for a run, instead of the run's own adapter). ``quantize``
    None keeps the run's setting ("none" forces a dense base); ``dtype`` None the run's / checkpoint's.
    Errors of every package become one-line RunErrors.
    """
    from lora_core import LoRAError
    from phi_models import HubError, PhiModelError

    _check_quantize(quantize)
    try:
        return _load(target, adapter, quantize, dtype, device)
    except (LoRAError, PhiModelError, HubError) as err:
        raise RunError(str(err)) from None


def _load(target, adapter, quantize, dtype, device) -> Loaded:
    import phi_models
    from phi_models.adapters import attach_adapter

    device = _default_device(device)
    run = open_run(target) if is_run_dir(target) else None
    if run is not None:
        model_name, revision, tokenizer_name = run.base_model, run.revision, run.tokenizer
        quant = run.quantize if quantize is None else quantize
        dtype = dtype or run.dtype
        template = run.template
    else:
        if Path(str(target)).exists() and not Path(str(target)).is_dir():
            raise RunError(f"{target}: a file, not a run directory or model; pass the adapter with --adapter")
        model_name, revision, tokenizer_name, quant = str(target), None, str(target), quantize
        template = _export_info(target).get("template")
    quant = None if quant in (None, "none") else quant
    model = phi_models.from_pretrained(model_name, revision=revision, dtype=dtype, device=device, quantize=quant)
    tokenizer = phi_models.load_tokenizer(tokenizer_name, revision=revision if tokenizer_name == model_name else None)
    adapter_path = adapter if adapter is not None else (run.adapter_file if run is not None else None)
    if adapter_path is not None:
        attach_adapter(model, adapter_path)
    if template is None:
        template = tokenizer.chat_format
    return Loaded(model=model.eval(), tokenizer=tokenizer, template=template, run=run)


def _export_info(target) -> dict[str, Any]:
    """philora.json of a merged export (template, stop tokens), or {}."""
    info = Path(str(target)) / EXPORT_INFO_FILE
    if not info.is_file():
        return {}
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
