"""from_pretrained: build the model empty (meta device), then fill it shard by shard.

Each tensor is read from its safetensors shard, checked against the shape the
config implies, cast, and placed; fused q/k/v pieces wait in a small buffer until
all three have arrived (their shard placement is never assumed). Under 4-bit each
layer linear is quantized the moment its weight is complete, so peak memory stays
near the final model size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from phi_models.config import PhiConfig
from phi_models.devices import check_device
from phi_models.errors import PhiModelError
from phi_models.json_files import read_json
from phi_models.keymap import QKV_SLOTS, map_key
from phi_models.model import PhiForCausalLM
from phi_models.presets import TINY_SEED
from phi_models.quantize import (
    check_quant_type,
    empty_linear4bit,
    quantizable_linears,
    quantize_model,
    replace_module,
    set_quantized_weight,
)
from phi_models.shard_paths import check_shard_name
from phi_models.source import ModelSource, resolve_source

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}  # fmt: skip


def _malloc_trim_function():
    """glibc's malloc_trim, or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim_function()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps quantization temporaries otherwise)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def parse_dtype(dtype: str | torch.dtype | None, default: torch.dtype | None = None) -> torch.dtype | None:
    """A torch dtype from a dtype, a name like 'bf16', or None/'auto' (-> ``default``).

    Public (``phi_models.parse_dtype``) so other packages accept the same names; raises PhiModelError.
    """
    if dtype is None or dtype == "auto":
        return default
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise PhiModelError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise PhiModelError(f"unknown dtype '{dtype}'; use one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[dtype]


def from_pretrained(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
    double_quant: bool = True,
    compute_dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    sliding_window_mode: str | None = None,
) -> PhiForCausalLM:
    """Load a Phi model from a preset name, a hub repo id or a local directory (returned in eval mode).

    ``dtype`` None/'auto' keeps the checkpoint's stored dtype (float32 for ``tiny``).
    ``quantize`` 'nf4'/'fp4' stores the layer linears in 4 bits (bitsandbytes) with
    ``compute_dtype`` (default: ``dtype``) for their matmuls. ``sliding_window_mode``
    overrides the config's 'w+1' (default) / 'w' window definition.
    """
    check_quant_type(quantize)
    device = check_device(device)
    source = resolve_source(name_or_path, revision)
    config = source.config()
    if sliding_window_mode is not None:  # a new config, validated like any other
        config = dataclasses.replace(config, sliding_window_mode=sliding_window_mode)
    target_dtype = parse_dtype(dtype, parse_dtype(config.torch_dtype, torch.float32))
    matmul_dtype = parse_dtype(compute_dtype, target_dtype)

    if source.kind == "tiny":
        model = PhiForCausalLM(config)
        model.init_weights(TINY_SEED)
        model.to(device=device, dtype=target_dtype)
        if quantize:
            quantize_model(model, quantize, double_quant, matmul_dtype)
        return model.eval()

    with torch.device("meta"):
        model = PhiForCausalLM(config)
    if quantize:
        for name in quantizable_linears(model):
            replace_module(
                model, name, empty_linear4bit(model.get_submodule(name), quantize, double_quant, matmul_dtype)
            )
    _fill(model, config, source, target_dtype, device)
    return model.eval()


def checkpoint_shards(source: ModelSource) -> list[Path]:
    """The safetensors files of a checkpoint, through the shard index when there is one."""
    index = source.file("model.safetensors.index.json", required=False)
    if index is None:
        single = source.file("model.safetensors", required=False)
        if single is None:
            where = " in the repo or the local cache" if source.kind == "hub" else ""
            raise PhiModelError(
                f"{source.name}: no model.safetensors or model.safetensors.index.json found{where} "
                f"(phi_models reads safetensors checkpoints only)"
            )
        return [single]
    raw = read_json(index, "shard index")
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise PhiModelError(f"{index}: not a valid shard index (expected a 'weight_map' of tensor name -> file name)")
    shards = []
    for filename in dict.fromkeys(weight_map.values()):
        check_shard_name(filename, index)
        path = source.file(filename, required=False)
        if path is None:
            raise PhiModelError(f"{source.name}: shard '{filename}' listed in model.safetensors.index.json is missing")
        shards.append(path)
    return shards


_CHUNK_BYTES = 32 * 2**20


def _row_reader(parts: list[torch.Tensor], dtype: torch.dtype):
    """read_rows(start, stop) over the row-wise concatenation of ``parts``, without concatenating them."""
    bounds, total = [], 0
    for part in parts:
        bounds.append((total, total + part.shape[0], part))
        total += part.shape[0]

    def read_rows(start: int, stop: int) -> torch.Tensor:
        pieces = [p[max(start, lo) - lo : min(stop, hi) - lo] for lo, hi, p in bounds if lo < stop and start < hi]
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces)).to(dtype)

    return read_rows


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_SAFETENSORS_FLOATS = ("F32", "F16", "BF16", "F64")


class _Filler:
    """Places arriving tensors into a meta-device model."""

    def __init__(self, model: PhiForCausalLM, config: PhiConfig, dtype: torch.dtype, device: torch.device):
        self.model = model
        self.config = config
        self.dtype = dtype
        self.device = device
        self.expected = {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}
        self.quantized_weights = set()
        for name, module in model.named_modules():
            if type(module).__name__ == "Linear4bit":
                self.quantized_weights.add(f"{name}.weight")
                self.expected[f"{name}.weight"] = (module.out_features, module.in_features)  # the dense shape
        self.tied = config.tie_word_embeddings
        self.loaded: set[str] = set()
        self.pending: dict[str, dict[str, torch.Tensor]] = {}

    def slot_shape(self, name: str, slot: str) -> tuple[int, ...]:
        rows = self.config.qkv_slices[slot]
        full = self.expected[name]
        return (rows, *full[1:])

    def add(self, key: str, handle, copier, shard: Path) -> None:
        """Check, read and place checkpoint tensor ``key`` of a shard open twice: ``handle`` memory-maps it
        (a tensor kept as stored stays a view of the file), ``copier`` reads bytes into new memory (every
        tensor that is cast, fused or quantized, so no file page it touched stays mapped)."""
        target = map_key(key, self.config)
        if target is None:
            return
        name = target.name
        if self.tied and name == "lm_head.weight":
            return  # tied: the head is the embedding, whatever the file holds
        if name not in self.expected:
            raise PhiModelError(
                f"{shard}: unexpected tensor '{key}': not part of a {self.config.model_type} model with "
                f"{self.config.num_hidden_layers} layers as config.json describes"
            )
        stored = copier.get_slice(key)
        shape = tuple(stored.get_shape())
        want = self.slot_shape(name, target.slot) if target.slot else self.expected[name]
        if shape != want:
            raise PhiModelError(f"{shard}: tensor '{key}' has shape {list(shape)} but config.json implies {list(want)}")
        if stored.get_dtype() not in _SAFETENSORS_FLOATS:
            raise PhiModelError(
                f"{shard}: tensor '{key}' is stored as {stored.get_dtype()}; model weights must be floating point "
                f"({', '.join(_SAFETENSORS_FLOATS)}), an integer tensor would be cast to meaningless weights"
            )
        if target.slot is None and name not in self.quantized_weights:
            self.place(name, self.read_dense(handle, copier, key, stored, shape))
            return
        if target.slot is None:  # a whole quantized weight: stream its rows into the quantizer
            module = self.model.get_submodule(name.rpartition(".")[0])
            rows = lambda start, stop: stored[start:stop].to(self.dtype)  # noqa: E731
            set_quantized_weight(module, None, self.device, self.dtype, read_rows=rows)
            self.after_quantize(name)
            return
        # One q/k/v piece of an HF-native phi layer: held until the other two arrive.
        tensor = copier.get_tensor(key)
        pieces = self.pending.setdefault(name, {})
        pieces[target.slot] = tensor
        if len(pieces) == len(QKV_SLOTS):
            del self.pending[name]
            ordered = [pieces.pop(s) for s in QKV_SLOTS]  # [Q | K | V] rows
            if name in self.quantized_weights:
                module = self.model.get_submodule(name.rpartition(".")[0])
                set_quantized_weight(module, None, self.device, self.dtype, read_rows=_row_reader(ordered, self.dtype))
                del ordered
                self.after_quantize(name)
            else:
                self.place(name, torch.cat(ordered, dim=0))

    def read_dense(self, handle, copier, key: str, stored, shape: tuple[int, ...]) -> torch.Tensor:
        """Read a tensor straight into its final dtype/device; big conversions go in row chunks
        so a whole second copy (e.g. fp16 and bf16 of the embedding) never exists at once."""
        same = _SAFETENSORS_DTYPES.get(stored.get_dtype()) == self.dtype and self.device.type == "cpu"
        numel = 1
        for size in shape:
            numel *= size
        if same:
            return handle.get_tensor(key)  # a view of the mapped file: pages become resident when first read
        if not shape or numel * 4 <= _CHUNK_BYTES:
            return copier.get_tensor(key).to(device=self.device, dtype=self.dtype)
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
        step = max(1, _CHUNK_BYTES // (4 * (numel // shape[0])))
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])  # the pread backend refuses a slice past the end
            out[start:stop].copy_(stored[start:stop])
        return out

    def place(self, name: str, tensor: torch.Tensor) -> None:
        module_name, _, attr = name.rpartition(".")
        module = self.model.get_submodule(module_name)
        if name in self.quantized_weights:
            set_quantized_weight(module, tensor, self.device, self.dtype)
            del tensor
            self.after_quantize(name)
            return
        value = tensor.to(device=self.device, dtype=self.dtype)
        module._parameters[attr] = nn.Parameter(value, requires_grad=True)
        self.loaded.add(name)

    def after_quantize(self, name: str) -> None:
        self.loaded.add(name)
        # Without this, glibc keeps each quantization's temporaries and the heap
        # creeps up by tens of MB per linear, defeating quantize-on-arrival.
        release_freed_memory()

    def finish(self, source_name: str) -> None:
        if "lm_head.weight" not in self.loaded:
            # No stored head (Phi-4-mini) or tie_word_embeddings: the head is the embedding.
            self.model.lm_head.weight = self.model.model.embed_tokens.weight
            self.loaded.add("lm_head.weight")
        missing = [n for n in self.expected if n not in self.loaded]
        if self.pending:
            missing += [f"{n} ({'/'.join(s for s in QKV_SLOTS if s not in p)} part)" for n, p in self.pending.items()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise PhiModelError(f"{source_name}: checkpoint is missing tensors: {shown}")


@torch.no_grad()
def _fill(
    model: PhiForCausalLM, config: PhiConfig, source: ModelSource, dtype: torch.dtype, device: torch.device
) -> None:
    filler = _Filler(model, config, dtype, device)
    for shard in checkpoint_shards(source):
        try:
            handle = safe_open(str(shard), framework="pt", device="cpu")
            copier = _copying_handle(shard)
        except Exception as err:
            raise PhiModelError(f"{shard}: not a readable safetensors file ({err})") from None
        with handle, copier:
            for key in handle.keys():
                filler.add(key, handle, copier, shard)
    filler.finish(source.name)
    release_freed_memory()  # the q/k/v pieces and cast temporaries


def _copying_handle(shard: Path):
    """The shard opened to read with pread(2) (safetensors >= 0.8), else memory-mapped like the first handle.

    A memory-mapped read leaves every page it touched resident for as long as the mapping lives, and the
    mapping lives as long as any tensor kept as a view of it: pieces that are only copied from would count
    twice in the process's memory.
    """
    try:
        return safe_open(str(shard), framework="pt", device="cpu", backend="pread")
    except TypeError:  # an older safetensors without the backend keyword
        return safe_open(str(shard), framework="pt", device="cpu")
