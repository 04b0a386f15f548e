"""What each deployment target would refuse or get wrong for a run's adapter, with the fix for each.

Targets: ``peft`` (transformers + peft), ``vllm`` (``--enable-lora``), ``llama.cpp`` (a gguf-lora adapter) and
``ollama`` (Modelfile ADAPTER + TEMPLATE). The same checks run, as warnings, at the end of training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from philora.deploy.lora_pieces import refusal_reasons
from philora.deploy.ollama import TEMPLATES

TARGETS = ("peft", "vllm", "llama.cpp", "ollama")
# vLLM accepts these --max-lora-rank values; an adapter above the largest cannot be served.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Problem:
    """One thing a target refuses (or renders wrong), and what to do about it."""

    target: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.target}: {self.message}; fix: {self.fix}"


def peft_rank(tensors: dict, lora_config: dict[str, Any], model_type: str | None = None) -> int:
    """The largest rank PEFT (and so vLLM) sees: r, or r x enabled slices for a Phi-3 fused-slice LoRA
    (phi-1.5/2 slices become separate rank-r q/k/v modules; an unknown model type counts like Phi-3)."""
    r = int(lora_config.get("r", 0))
    if model_type == "phi":
        return r
    return max([r, *(int(t.shape[0]) for k, t in tensors.items() if k.endswith(".lora_A"))])


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts that fits ``rank``; None above vLLM's largest."""
    return next((value for value in VLLM_LORA_RANKS if value >= rank), None)


def _modules_to_save(peft_dir: Path | None) -> list[str]:
    if peft_dir is None or not (peft_dir / "adapter_config.json").is_file():
        return []
    try:
        config = json.loads((peft_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return list(config.get("modules_to_save") or [])


def problems(
    tensors: dict,
    lora_config: dict[str, Any],
    *,
    target: str,
    template: str | None,
    model_type: str | None = None,
    peft_dir: Path | None = None,
) -> list[Problem]:
    """Every problem ``target`` has with this adapter (empty: deployable)."""
    found: list[Problem] = []
    dora = bool(lora_config.get("use_dora")) or any(k.endswith("lora_magnitude_vector") for k in tensors)
    modules = {key.rpartition(".")[0] for key in tensors}
    embedding = sorted(m for m in modules if m.endswith("embed_tokens") or m == "lm_head")
    saved = _modules_to_save(peft_dir)
    if target == "peft":
        extra = sorted(k for k in tensors if not k.endswith((".lora_A", ".lora_B", ".lora_magnitude_vector")))
        if extra:
            found.append(
                Problem(
                    target,
                    f"the adapter holds non-LoRA tensors ({extra[0]} ...)",
                    "train with LoRA factors only (no trained biases), or export the merged model",
                )
            )
    elif target == "vllm":
        if dora:
            found.append(
                Problem(
                    target,
                    "vLLM does not serve DoRA adapters",
                    "train without DoRA, or serve the merged model (philora merge)",
                )
            )
        if saved:
            found.append(
                Problem(
                    target,
                    f"vLLM refuses modules_to_save ({', '.join(saved)})",
                    "train without saved modules, or serve the merged model (philora merge)",
                )
            )
        if embedding:
            found.append(
                Problem(
                    target,
                    f"LoRA on {', '.join(embedding)}: vLLM serves LoRA on linear layers only",
                    "leave the embedding and lm_head out of the targets, or serve the merged model",
                )
            )
        rank = peft_rank(tensors, lora_config, model_type)
        if vllm_max_lora_rank(rank) is None:
            found.append(
                Problem(
                    target,
                    f"LoRA rank {rank} is above vLLM's maximum --max-lora-rank {VLLM_LORA_RANKS[-1]}",
                    f"train with --lora-r {VLLM_LORA_RANKS[-1]} or less (Phi-3 fused slices count r "
                    f"once per slice), or serve the merged model",
                )
            )
    elif target in ("llama.cpp", "ollama"):
        for reason in refusal_reasons(tensors, lora_config):
            message, _, fix = reason.partition("; ")
            found.append(
                Problem(
                    target,
                    f"llama.cpp's LoRA loader cannot take it: {message}",
                    fix or "export the merged model instead",
                )
            )
        if model_type not in (None, "phi", "phi3"):
            found.append(
                Problem(
                    target,
                    f"model type {model_type!r} has no llama.cpp architecture here",
                    "use a phi-1.5/2 or Phi-3-family base",
                )
            )
        if target == "ollama" and template not in TEMPLATES:
            found.append(
                Problem(
                    target,
                    f"template {template!r} has no Ollama TEMPLATE equivalent",
                    f"train with one of {', '.join(TEMPLATES)}, or write the Modelfile TEMPLATE by hand",
                )
            )
    else:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    return found


def run_problems(run, targets: tuple[str, ...] | list[str] = TARGETS, model_type: str | None = None) -> list[Problem]:
    """``problems`` for a philora.runs.RunInfo, for each of ``targets`` (``model_type``: the base's, if known)."""
    from lora_core import read_adapter

    tensors, file_config = read_adapter(run.adapter_file)
    lora_config = dict(run.lora or {}, **file_config)  # the file is what gets deployed
    found: list[Problem] = []
    for target in targets:
        template = run.template
        if target == "ollama":
            from philora.deploy.export_formats import ollama_template

            template = ollama_template(run)
        found += problems(
            tensors, lora_config, target=target, template=template, model_type=model_type, peft_dir=run.peft_dir
        )
    return found


def training_warnings(run_dir: str | Path) -> list[str]:
    """One line per deployment problem of a finished run (for the end of training); never raises."""
    try:
        from philora.deploy.export_formats import base_config
        from philora.runs import open_run

        run = open_run(run_dir)
        return [f"deploy warning: {problem}" for problem in run_problems(run, model_type=base_config(run).model_type)]
    except Exception as err:  # a warning pass must never fail a finished training run
        return [f"deploy warning: could not check deployability ({err})"]
