"""Benchmark phi_models.from_pretrained: load time, peak memory during the load, resident size after.

Writes a phi-2-width checkpoint (hidden 2560, 32 heads, partial rotary 0.4, vocab 51200) with a few
layers as fp16 safetensors in HF-native layout (separate q/k/v, two shards), then loads it in a fresh
subprocess per mode so every measurement starts from the same baseline. Not a test.

    python bench/bench_load.py [--layers 4] [--dtype bfloat16] [--keep DIR]

Columns: ``model`` = bytes of the loaded parameters and quantization state; ``after`` = RSS growth
over the pre-load baseline once loading is done; ``peak anon`` = highest growth of anonymous
(heap) memory seen while loading, sampled every 2 ms; ``peak rss`` = kernel's high-water mark
(also counts the memory-mapped checkpoint pages, which the kernel can drop).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, HEADS, VOCAB = 2560, 32, 51200


def write_checkpoint(directory: Path, layers: int) -> int:
    """An HF-native phi-2-shaped checkpoint of ``layers`` layers in two fp16 shards; returns its bytes."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, generator=gen) * 0.02).half()  # noqa: E731
    tensors = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in [("self_attn.q_proj", (HIDDEN, HIDDEN)), ("self_attn.k_proj", (HIDDEN, HIDDEN)),
                            ("self_attn.v_proj", (HIDDEN, HIDDEN)), ("self_attn.dense", (HIDDEN, HIDDEN)),
                            ("mlp.fc1", (4 * HIDDEN, HIDDEN)), ("mlp.fc2", (HIDDEN, 4 * HIDDEN))]:  # fmt: skip
            tensors[f"{p}{name}.weight"] = rand(*shape)
            tensors[f"{p}{name}.bias"] = rand(shape[0])
        tensors[f"{p}input_layernorm.weight"] = torch.ones(HIDDEN).half()
        tensors[f"{p}input_layernorm.bias"] = torch.zeros(HIDDEN).half()
    tensors["model.final_layernorm.weight"] = torch.ones(HIDDEN).half()
    tensors["model.final_layernorm.bias"] = torch.zeros(HIDDEN).half()
    tensors["lm_head.weight"] = rand(VOCAB, HIDDEN)
    tensors["lm_head.bias"] = rand(VOCAB)
    names = list(tensors)
    # Shard split puts k_proj of the middle layer in shard 2 and q_proj in shard 1, like a real split.
    cut = names.index(f"model.layers.{layers // 2}.self_attn.k_proj.weight")
    weight_map = {}
    for number, part in enumerate((names[:cut], names[cut:]), start=1):
        filename = f"model-0000{number}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, directory / filename)
        weight_map.update({n: filename for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    config = {
        "model_type": "phi", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 4 * HIDDEN,
        "num_hidden_layers": layers, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
        "partial_rotary_factor": 0.4, "rope_theta": 10000.0, "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5, "hidden_act": "gelu_new", "resid_pdrop": 0.1, "torch_dtype": "float16",
        "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    return total


_CHILD = r"""
import json, sys, threading, time
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
import torch, phi_models
import bitsandbytes  # imported before the baseline: a fixed cost, not part of the model's memory
directory, dtype, quantize = sys.argv[1], sys.argv[2], (sys.argv[3] if sys.argv[3] != "none" else None)
base_rss, base_anon = status("VmRSS"), status("RssAnon")
open("/proc/self/clear_refs", "w").write("5")  # reset the VmHWM high-water mark
peak_anon = [base_anon]
loading = [True]
def sample():
    while loading[0]:
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
model = phi_models.from_pretrained(directory, dtype=dtype, quantize=quantize)
seconds = time.perf_counter() - start
loading[0] = False
sampler.join()
peak_anon[0] = max(peak_anon[0], status("RssAnon"))
size = 0
seen = set()
for t in list(model.parameters()) + list(model.buffers()):
    if id(t) in seen:
        continue
    seen.add(id(t))
    size += t.numel() * t.element_size()
    state = getattr(t, "quant_state", None)
    if state is not None:
        for part in (state.absmax, getattr(state, "state2", None) and state.state2.absmax):
            if part is not None:
                size += part.numel() * part.element_size()
print(json.dumps(dict(seconds=seconds, model=size, after=status("VmRSS") - base_rss,
                      peak_anon=peak_anon[0] - base_anon, peak_rss=status("VmHWM") - base_rss)))
"""


def measure(directory: Path, dtype: str, quantize: str | None) -> dict:
    """Run one load in a fresh interpreter and return its measurements."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(directory), dtype, quantize or "none"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16", help="dtype of the dense parts (default bfloat16)")
    parser.add_argument("--keep", type=Path, help="write/reuse the checkpoint in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        size = write_checkpoint(directory, args.layers) if not (directory / "config.json").exists() else None
        if size:
            print(f"wrote {size / 2**20:.0f} MiB phi-2-width checkpoint, {args.layers} layers, "
                  f"in {time.perf_counter() - start:.1f}s")  # fmt: skip
        mib = lambda b: f"{b / 2**20:8.0f}"  # noqa: E731
        print(
            f"{'mode':<16}{'load s':>8}{'model MiB':>11}{'after MiB':>11}"
            f"{'peak anon':>11}{'peak rss':>10}{'peak/model':>12}"
        )
        for label, quantize in ((f"dense {args.dtype}", None), ("nf4", "nf4")):
            r = measure(directory, args.dtype, quantize)
            print(f"{label:<16}{r['seconds']:8.2f}{mib(r['model']):>11}{mib(r['after']):>11}"
                  f"{mib(r['peak_anon']):>11}{mib(r['peak_rss']):>10}{r['peak_anon'] / r['model']:12.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
