"""Our adapter as Hugging Face-named LoRA pieces: one (A, B, scale) per module of the HF/PEFT model.

Our adapter files hold loralib keys of *our* module tree (docs/design.md): phi-1.5/2 compute q/k/v in one
fused ``qkv_proj`` and a LoRA there is either whole (``lora_core.Linear``) or per slice
(``lora_core.MergedLinear``). Targets outside philora (PEFT, vLLM, llama.cpp) see transformers' modules:

- phi-1.5/2 (HF ``q_proj``/``k_proj``/``v_proj`` are separate): each enabled slice becomes its own piece
  (its rank-r group of A and its rows of B); a whole-``qkv_proj`` LoRA becomes three pieces sharing A.
- Phi-3 family (HF keeps ``qkv_proj`` and ``gate_up_proj`` fused): enabled slices of one fused module become
  one piece of rank r x (enabled slices), A the slices' groups stacked, B block-diagonal with zero rows for
  disabled slices, and the *per-slice* scale (alpha/r, or alpha/sqrt(r) with rsLoRA), which PEFT can only
  express with rank_pattern/alpha_pattern.

The effective update of every piece, ``scale * B @ A``, equals what our model adds to that HF module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from phi_models import PhiConfig
from philora.deploy.errors import DeployError

_EMBEDDING_MODULES = ("model.embed_tokens", "lm_head")


@dataclass
class LoraPiece:
    """LoRA on one HF module: ``A`` (rank, in), ``B`` (out, rank), update ``scale * B @ A``."""

    module: str
    A: torch.Tensor
    B: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        """Inner dimension of B @ A (what llama.cpp divides alpha by)."""
        return int(self.A.shape[0])


def fused_slices(module: str, config: PhiConfig) -> dict[str, int] | None:
    """Slice name -> rows of our fused module ``module`` (``...qkv_proj`` / ``...gate_up_proj``), else None."""
    if module.endswith(".self_attn.qkv_proj"):
        return config.qkv_slices
    if module.endswith(".mlp.gate_up_proj"):
        return {"gate_proj": config.intermediate_size, "up_proj": config.intermediate_size}
    return None


def slice_scale(lora_config: dict[str, Any]) -> float:
    """PEFT/loralib scale of one rank-r group: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    r, alpha = int(lora_config["r"]), float(lora_config["lora_alpha"])
    return alpha / (math.sqrt(r) if lora_config.get("use_rslora") else r)


def refusal_reasons(tensors: dict[str, torch.Tensor], lora_config: dict[str, Any]) -> list[str]:
    """Why an adapter has no plain-LoRA form (DoRA, embedding/lm_head LoRA, extra tensors); empty when it has one."""
    reasons = []
    if lora_config.get("use_dora") or any(k.endswith("lora_magnitude_vector") for k in tensors):
        reasons.append(
            "the adapter uses DoRA (a learned magnitude per output row), which is not a plain "
            "low-rank update; train without DoRA, or export the merged model instead"
        )
    modules = {key.rpartition(".")[0] for key in tensors}
    for name in sorted(m for m in modules if m in _EMBEDDING_MODULES or m.endswith(".embed_tokens")):
        reasons.append(
            f"the adapter has LoRA on {name} (an embedding/lm_head adapter); leave {name} out of "
            f"the targets, or export the merged model instead"
        )
    extra = sorted(k for k in tensors if not k.endswith((".lora_A", ".lora_B", ".lora_magnitude_vector")))
    if extra:
        reasons.append(
            f"the adapter holds tensors that are not LoRA factors ({', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''}: trained biases or saved modules); export the merged "
            f"model instead"
        )
    return reasons


def enabled_slices(module: str, slices: dict[str, int], adapted: list[str]) -> list[str] | None:
    """The slices of fused ``module`` that carry LoRA per the config's ``adapted`` names; None if it is whole."""
    parent = module.rpartition(".")[0]
    if module in adapted:
        return None
    chosen = [s for s in slices if f"{parent}.{s}" in adapted]
    return chosen or None


def hf_pieces(tensors: dict[str, torch.Tensor], lora_config: dict[str, Any], config: PhiConfig) -> list[LoraPiece]:
    """Our adapter's tensors as HF-named pieces (see the module docstring); raises DeployError when it has none."""
    reasons = refusal_reasons(tensors, lora_config)
    if reasons:
        raise DeployError("; ".join(reasons))
    r = int(lora_config["r"])
    scale = slice_scale(lora_config)
    adapted = list(lora_config.get("adapted") or [])
    pieces: list[LoraPiece] = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A")):
        module = key[: -len(".lora_A")]
        A, B = tensors[key], tensors.get(module + ".lora_B")
        if B is None:
            raise DeployError(f"adapter tensor {module}.lora_B is missing (the file has {key})")
        slices = fused_slices(module, config)
        chosen = enabled_slices(module, slices, adapted) if slices else None
        if slices and chosen is None and A.shape[0] != r:
            raise DeployError(
                f"{module}: lora_A has {A.shape[0]} rows but r={r} and the adapter config's "
                f"'adapted' names none of its slices; the adapter config does not match its tensors"
            )
        if slices is None or (chosen is None and config.model_type == "phi3"):
            pieces.append(LoraPiece(module, A, B, scale))  # an HF module as it is
        elif config.model_type == "phi3":
            pieces.append(LoraPiece(module, A, block_b(B, slices, chosen, r), scale))
        else:
            pieces.extend(split_phi_qkv(module, A, B, slices, chosen, r, scale))
    return pieces


def block_b(B: torch.Tensor, slices: dict[str, int], chosen: list[str], r: int) -> torch.Tensor:
    """MergedLinear's B (rows of the enabled slices, r) as the dense (out, r * n_enabled) block matrix."""
    out = torch.zeros(sum(slices.values()), r * len(chosen), dtype=B.dtype)
    row, b_row, group = 0, 0, 0
    for name, size in slices.items():
        if name in chosen:
            out[row : row + size, group * r : (group + 1) * r] = B[b_row : b_row + size]
            b_row += size
            group += 1
        row += size
    return out


def split_phi_qkv(
    module: str,
    A: torch.Tensor,
    B: torch.Tensor,
    slices: dict[str, int],
    chosen: list[str] | None,
    r: int,
    scale: float,
) -> list[LoraPiece]:
    """phi-1.5/2's fused qkv LoRA as HF's separate q_proj/k_proj/v_proj pieces."""
    parent = module.rpartition(".")[0]
    pieces, row, b_row, group = [], 0, 0, 0
    for name, size in slices.items():
        if chosen is None:  # one LoRA over all rows: every slice shares A, takes its rows of B
            pieces.append(LoraPiece(f"{parent}.{name}", A, B[row : row + size], scale))
        elif name in chosen:
            pieces.append(LoraPiece(f"{parent}.{name}", A[group * r : (group + 1) * r], B[b_row : b_row + size], scale))
            b_row += size
            group += 1
        row += size
    return pieces
