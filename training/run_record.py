"""What a run resolved, recorded in ``train_config.yaml`` so the run directory is enough to use the adapter.

``philora.runs.open_run`` reads this ``resolved:`` section back: the base model (hub repo id, or an absolute
local path) and the exact revision, base dtype and 4-bit quantization, template, LoRA targets and settings,
stop tokens. ``--config runs/X/train_config.yaml`` skips the section (see ``training.config.RESOLVED_KEY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

RECORD_VERSION = 1
PEFT_DIR = "peft"
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def resolved_base(model_name: str, revision: str | None) -> dict[str, Any]:
    """Where the base came from: ``base_model`` (repo id, absolute dir, or ``tiny``) and the commit it was at."""
    from phi_models.source import resolve_source

    source = resolve_source(model_name, revision)
    out: dict[str, Any] = {"base_model": model_name, "base_model_repo": source.repo_id, "revision": revision}
    if source.kind == "dir":
        out["base_model"] = str(Path(source.directory).resolve())
    elif source.kind == "hub":
        out["base_model"] = source.repo_id
        # The cached file lies in .../snapshots/<commit>/: record the commit actually used, so later
        # loads get the same weights even after the branch moves.
        config_path = source.file("config.json", required=False)
        if config_path is not None and config_path.parent.parent.name == "snapshots":
            out["revision"] = config_path.parent.name
    return out


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bf16`` (the names phi_models.parse_dtype reads)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def model_base_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the frozen base weights (the embedding is never quantized)."""
    return model.model.embed_tokens.weight.dtype


def build_record(
    cfg,
    *,
    model,
    tokenizer,
    template: str,
    targets: list[str],
    adapter_config: dict,
    precision: str,
    device: str,
    total_steps: int,
) -> dict[str, Any]:
    """The ``resolved:`` section of ``train_config.yaml`` for a run about to train."""
    record: dict[str, Any] = {"record_version": RECORD_VERSION}
    record.update(resolved_base(cfg.model, cfg.revision))
    stops = list(tokenizer.stop_token_ids)
    record.update(
        tokenizer=cfg.tokenizer or record["base_model"],
        model_type=model.config.model_type,
        dtype=dtype_name(model_base_dtype(model)),
        quantize=None if cfg.quantize == "none" else cfg.quantize,
        precision=precision,
        device=device,
        template=template,
        chat_format=tokenizer.chat_format,
        targets=list(targets),
        stop_token_ids=stops,
        stop_tokens=[tokenizer.decode([i], skip_special_tokens=False) for i in stops],
        lora={k: v for k, v in adapter_config.items() if k != "base_model"},
        total_steps=total_steps,
        adapter="adapter.safetensors",
        peft_dir=PEFT_DIR,
    )
    return record


def write_run_peft_copy(model, out: Path, record: dict[str, Any], say) -> Path | None:
    """``<out>/peft/``: the final adapter in PEFT's format (loads in transformers + peft and vLLM)."""
    from lora_core import LoRAError
    from phi_models import PhiModelError, export_peft_adapter

    try:
        path = export_peft_adapter(
            model, out / PEFT_DIR, base_model_name_or_path=record.get("base_model"), revision=record.get("revision")
        )
    except (LoRAError, PhiModelError) as err:  # the philora adapter is saved; say why the PEFT copy is not
        say(f"warning: no PEFT copy of the adapter in {out / PEFT_DIR}: {err}")
        return None
    say(f"PEFT adapter: {path}  (peft.PeftModel.from_pretrained(model, '{path}'))")
    return path
