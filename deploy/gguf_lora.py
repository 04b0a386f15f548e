"""Our adapter as a GGUF LoRA adapter for llama.cpp (``llama-cli -m base.gguf --lora F.gguf``) and Ollama (ADAPTER).

Layout as llama.cpp's ``convert_lora_to_gguf.py`` writes it: ``general.type=adapter``, ``adapter.type=lora``,
``adapter.lora.alpha``, and per adapted weight ``<llama.cpp name>.lora_a`` (rank, in) and ``.lora_b`` (out, rank)
(PyTorch shapes), Phi-3 fused slices as one block-structured qkv/ffn_up LoRA, in the order of the HF names.

Scale. llama.cpp applies ``alpha / rank`` per tensor, rank = that tensor's inner dimension, with one alpha per
file. PEFT's scale is alpha/r per rank-r group (alpha/sqrt(r) with rsLoRA). Where these differ (rsLoRA; a
Phi-3 fused-slice LoRA of rank r x slices) the converter writes a mis-scaled file; we write the file alpha that
makes the most tensors exact (rsLoRA folds into it: alpha * sqrt(r)) and multiply the remaining tensors' B by
their true scale over llama.cpp's, so llama.cpp's update ``alpha/rank * B @ A`` equals PEFT's everywhere.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from phi_models import PhiConfig
from philora.deploy.gguf_common import (
    add_general_metadata,
    encode_tensor,
    file_type,
    gguf_arch,
    require_gguf,
    tensor_namer,
    tensor_qtype,
    write_file,
)
from philora.deploy.lora_pieces import LoraPiece, hf_pieces


def file_alpha(pieces: list[LoraPiece]) -> float:
    """The one adapter.lora.alpha: true scale x rank of the most common (scale, rank) pair (first one on ties)."""
    counts = Counter((p.scale, p.rank) for p in pieces)
    scale, rank = max(counts, key=lambda pair: (counts[pair], -list(counts).index(pair)))
    return float(scale * rank)


def llama_cpp_factors(pieces: list[LoraPiece]) -> tuple[float, list[tuple[LoraPiece, torch.Tensor]]]:
    """(file alpha, [(piece, B to store)]) such that alpha/rank * stored B @ A == piece.scale * B @ A."""
    alpha = file_alpha(pieces)
    stored = []
    for piece in pieces:
        llama_scale = alpha / piece.rank
        if llama_scale == piece.scale:
            stored.append((piece, piece.B))
        else:  # folded in fp32: the ratio is exact (2.0) for the usual fused-slice case
            stored.append((piece, piece.B.to(torch.float32) * (piece.scale / llama_scale)))
    return alpha, stored


def write_gguf_lora(
    tensors: dict[str, torch.Tensor],
    lora_config: dict[str, Any],
    config: PhiConfig,
    out: Path,
    *,
    dtype: str = "f32",
    name: str | None = None,
    card_dir: Path | None = None,
) -> Path:
    """Write our adapter (``tensors``, ``lora_config`` as read by lora_core.read_adapter) for a base of ``config``.

    ``name``/``card_dir`` feed general.* like the converter's adapter directory does (its name, its README
    model card). Raises DeployError for DoRA, embedding or lm_head adapters.
    """
    gguf = require_gguf()
    out = Path(out)
    ftype = file_type(dtype)
    pieces = sorted(hf_pieces(tensors, lora_config, config), key=lambda p: p.module)
    alpha, stored = llama_cpp_factors(pieces)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf_arch(config)])
    to_gguf = tensor_namer(config)
    for piece, B in stored:
        base = to_gguf(piece.module + ".weight")
        for suffix, tensor in ((".lora_a", piece.A), (".lora_b", B)):
            if piece.A.dtype != B.dtype:  # the converter's rule: mixed factor dtypes both go to f32
                tensor = tensor.to(torch.float32)
            data, qtype = encode_tensor(tensor, tensor_qtype(base + suffix, tensor.dim(), ftype))
            writer.add_tensor(base + suffix, data, raw_dtype=qtype)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    total = writer.get_total_parameter_count()[0]
    add_general_metadata(writer, name or out.stem, card_dir, total, size_label=False)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_file(writer, out)
    return out
