"""GGUF end to end, not in CI: llama.cpp (through llama-cpp-python, compiled from the registry's sdist, about
15 minutes on 2 cores) runs our merged GGUF and our base GGUF + gguf-lora adapter; we compare its greedy
tokens and prompt logits with philora's own model.

    pip install llama-cpp-python diskcache   # builds llama.cpp (its Python package also imports diskcache)
    PYTHONPATH=. python bench/gguf_end_to_end.py --run RUN_DIR [--dtype f32] [--tokens 24]

Prints the largest |logit difference| over the prompt's last position and whether the greedy tokens agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def philora_side(run, prompt_ids: list[int], tokens: int):
    """Our model's last-position logits for the prompt and its greedy continuation."""
    import phi_models
    from philora.runs import load_for_inference

    loaded = load_for_inference(run.path, quantize="none", dtype="float32")
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt_ids]))[0, -1]
    (greedy,) = phi_models.generate(loaded.model, [prompt_ids], max_new_tokens=tokens, stop_ids=[])
    return logits, list(greedy)


def llama_side(model_path: Path, prompt_ids: list[int], tokens: int, lora_path: Path | None):
    """llama.cpp's last-position logits and greedy continuation for the same token ids."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model_path),
        lora_path=str(lora_path) if lora_path else None,
        logits_all=True,
        n_ctx=512,
        verbose=False,
        seed=0,
    )
    llm.eval(prompt_ids)
    logits = torch.tensor(llm.scores[len(prompt_ids) - 1])
    llm.reset()
    greedy = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        greedy.append(int(token))
        if len(greedy) == tokens:
            break
    return logits, greedy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a philora run directory")
    parser.add_argument("--dtype", default="f32", help="GGUF dtype to export (f32 compares arithmetic only)")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--prompt", default="<|user|>\nTell me about the sea.\n<|assistant|>\n")
    args = parser.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("pip install llama-cpp-python diskcache first (it compiles llama.cpp)", file=sys.stderr)
        return 2
    import phi_models
    from lora_core import read_adapter
    from philora.deploy.export_formats import base_config, load_dense, tokenizer_dir
    from philora.deploy.gguf_lora import write_gguf_lora
    from philora.deploy.gguf_model import write_gguf_model
    from philora.runs import open_run

    run = open_run(args.run)
    tokenizer = phi_models.load_tokenizer(run.tokenizer or run.base_model, revision=run.revision)
    prompt_ids = tokenizer.encode(args.prompt)
    ours_logits, ours_tokens = philora_side(run, prompt_ids, args.tokens)
    opts = argparse.Namespace(adapter=None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        merged = write_gguf_model(
            load_dense(run, opts, merged=True), tokenizer_dir(run), tmp / "merged.gguf", dtype=args.dtype
        )
        base = write_gguf_model(
            load_dense(run, opts, merged=False), tokenizer_dir(run), tmp / "base.gguf", dtype=args.dtype
        )
        tensors, config = read_adapter(run.adapter_file)
        lora = write_gguf_lora(
            tensors, dict(run.lora or {}, **config), base_config(run), tmp / "lora.gguf", dtype="f32"
        )
        for label, model_path, lora_path in (("merged GGUF", merged, None), ("base GGUF + LoRA GGUF", base, lora)):
            logits, greedy = llama_side(model_path, prompt_ids, args.tokens, lora_path)
            diff = (logits - ours_logits).abs().max().item()
            same = sum(a == b for a, b in zip(greedy, ours_tokens))
            print(
                f"{label:24s} dtype {args.dtype}: max |logit diff| {diff:.3e}, greedy tokens equal "
                f"{same}/{len(ours_tokens)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
