"""What generate, chat and serve share: loading RUN_OR_MODEL for inference and the reply's stops.

Loading goes through ``philora.runs.load_for_inference`` (the run directory's owner); the template is
``--template`` if given, else the run's, else the model's own chat format, else data's base default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.errors import DataError
from lora_core import LoRAError
from phi_models import HubError, PhiModelError

from .prompting import check_template, default_template, stop_strings_for


class InferenceError(ValueError):
    """Bad input to generate/chat/serve; the message is one line saying what to do."""


def user_errors() -> tuple[type[Exception], ...]:
    """The error classes whose messages are written for users (printed as one line, exit 2)."""
    errors: list[type[Exception]] = [InferenceError, DataError, LoRAError, PhiModelError, HubError]
    try:
        from philora.runs import RunError

        errors.append(RunError)
    except ImportError:
        pass
    return tuple(errors)


@dataclass
class InferenceModel:
    """A model ready to answer: weights, tokenizer, prompt template, and what ends a reply."""

    model: Any
    tokenizer: Any
    template: str
    stop_ids: list[int]
    stop_strings: tuple[str, ...]
    name: str
    run: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + reply) the model takes."""
        return int(self.model.config.max_position_embeddings)


def load_inference_model(target: str, *, adapter: str | None = None, quantize: str | None = None,
                         dtype: str | None = None, device: str | None = None,
                         template: str | None = None) -> InferenceModel:
    """Load ``target`` (a run directory, preset, hub id, local model or merged export) for inference."""
    try:
        from philora.runs import load_for_inference
    except ImportError:  # until issue 8's run module is merged: models and our adapter files only
        load_for_inference = _load_without_runs
    loaded = load_for_inference(target, adapter=adapter, quantize=quantize, dtype=dtype, device=device)
    tokenizer = loaded.tokenizer
    chosen = template or loaded.template or default_template(tokenizer)
    try:
        check_template(chosen)
    except DataError as err:
        raise InferenceError(f"--template: {err}") from None
    stop_ids = list(tokenizer.stop_token_ids)
    run = loaded.run
    if run is not None:
        stop_ids += [int(t) for t in getattr(run, "stop_token_ids", []) if int(t) not in stop_ids]
    return InferenceModel(model=loaded.model.eval(), tokenizer=tokenizer, template=chosen, stop_ids=stop_ids,
                          stop_strings=stop_strings_for(chosen), name=str(target), run=run)


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    template: str | None
    run: Any = None


def _load_without_runs(target, *, adapter=None, quantize=None, dtype=None, device=None) -> _Loaded:
    """A model (preset, hub id, local dir) plus optionally our adapter file; stands in for philora.runs."""
    import lora_core
    import phi_models

    import torch
    import yaml

    template = None
    config_file = Path(str(target)) / "train_config.yaml"
    if config_file.is_file():  # a run directory: its base, settings and final adapter
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        target, template = config["model"], config.get("template")
        adapter = adapter or str(config_file.parent / "adapter.safetensors")
        quantize = quantize or config.get("quantize")
        dtype = dtype or (None if config.get("dtype") in (None, "auto") else config["dtype"])
    quantize = None if quantize in (None, "none") else quantize
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = phi_models.from_pretrained(str(target), dtype=dtype, device=device, quantize=quantize)
    tokenizer = phi_models.load_tokenizer(str(target))
    if adapter is not None:
        _, config = lora_core.read_adapter(adapter)
        if not config.get("adapted"):
            raise InferenceError(f"--adapter {adapter}: the file records no LoRA config (targets, r)")
        lora_core.inject(model, targets=config["adapted"], r=int(config["r"]),
                         lora_alpha=config.get("lora_alpha", config["r"]), use_rslora=config.get("use_rslora", False),
                         use_dora=config.get("use_dora", False))
        lora_core.load_adapter(model, adapter, strict=True)
    return _Loaded(model=model.eval(), tokenizer=tokenizer, template=template or tokenizer.chat_format)
