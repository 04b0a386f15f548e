"""What every GGUF file we write shares: llama.cpp's architecture and tensor names, tensor types, general.* keys.

All of it comes from the ``gguf`` package (made by the llama.cpp project), so names and encodings are the ones
llama.cpp's own converters produce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from phi_models import PhiConfig
from philora.deploy.errors import DeployError

GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")


def require_gguf():
    """The ``gguf`` module, or a DeployError saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise DeployError(
            "writing GGUF needs the gguf package: pip install 'philora[gguf]' (or pip install gguf)"
        ) from None
    return gguf


def gguf_arch(config: PhiConfig):
    """llama.cpp's architecture for our model type: phi-1.5/2 -> PHI2, the Phi-3 family -> PHI3."""
    gguf = require_gguf()
    return gguf.MODEL_ARCH.PHI2 if config.model_type == "phi" else gguf.MODEL_ARCH.PHI3


def tensor_namer(config: PhiConfig):
    """A function: HF tensor name ('model.layers.0.self_attn.q_proj.weight') -> llama.cpp's ('blk.0.attn_q.weight')."""
    gguf = require_gguf()
    mapping = gguf.get_tensor_name_map(gguf_arch(config), config.num_hidden_layers)

    def name(hf_name: str) -> str:
        found = mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise DeployError(
                f"{hf_name} has no llama.cpp tensor name for {config.model_type}; cannot write it to GGUF"
            )
        return found

    return name


def file_type(dtype: str):
    """gguf.LlamaFileType for a --dtype name."""
    gguf = require_gguf()
    if dtype not in GGUF_DTYPES:
        raise DeployError(f"--dtype {dtype!r}: GGUF export writes one of {', '.join(GGUF_DTYPES)}")
    types = gguf.LlamaFileType
    return {"f32": types.ALL_F32, "f16": types.MOSTLY_F16, "bf16": types.MOSTLY_BF16, "q8_0": types.MOSTLY_Q8_0}[dtype]


def encode_tensor(tensor: torch.Tensor, qtype) -> tuple[np.ndarray, Any]:
    """(data, type) as llama.cpp's converter stores it: floats other than f16/f32 go through f32, then the
    gguf package's own rounding/quantization; a shape q8_0 cannot block falls back to f16 like the converter."""
    gguf = require_gguf()
    if tensor.dtype not in (torch.float16, torch.float32):
        tensor = tensor.to(torch.float32)
    data = tensor.detach().cpu().contiguous().numpy()
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def tensor_qtype(gguf_name: str, ndim: int, ftype):
    """Type a tensor gets under file type ``ftype``: 1-D tensors and norms stay f32 (llama.cpp needs them so)."""
    gguf = require_gguf()
    q = gguf.GGMLQuantizationType
    if ndim <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith((".weight", ".lora_a", ".lora_b")):
        return q.F32
    return {
        gguf.LlamaFileType.ALL_F32: q.F32,
        gguf.LlamaFileType.MOSTLY_F16: q.F16,
        gguf.LlamaFileType.MOSTLY_BF16: q.BF16,
        gguf.LlamaFileType.MOSTLY_Q8_0: q.Q8_0,
    }[ftype]


def add_general_metadata(writer, name: str, card_dir: Path | None, total_params: int, *, size_label: bool) -> None:
    """general.* keys (name, size label, base model and tags from a model card) through gguf.Metadata."""
    gguf = require_gguf()
    metadata = gguf.Metadata.load(None, card_dir, None, total_params)
    if metadata.name is None:
        metadata.name = name
    if size_label and metadata.size_label is None and total_params > 0:
        metadata.size_label = gguf.size_label(*writer.get_total_parameter_count())
    metadata.set_gguf_meta_model(writer)


def write_file(writer, out: Path) -> None:
    """Write a filled GGUFWriter to ``out`` atomically."""
    from lora_core import atomic_write

    def dump(tmp) -> None:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, dump)
