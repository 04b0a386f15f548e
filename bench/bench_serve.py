"""Benchmark philora serve: tokens/s and time to first token at 1, 4 and 16 concurrent clients,
batched (up to 16 rows per forward) vs one request at a time (``--max-batch 1``). Not a test.

    python bench/bench_serve.py [--models tiny phi2w2] [--clients 1 4 16] [--requests 2] [--max-tokens 32]

Models: ``tiny`` (the built-in preset) and ``phi2w2``, a phi-2-width random model (hidden 2560, 32 heads,
partial rotary 0.4, vocab 51200, fp32) with 2 layers, prompted through the real phi-2 tokenizer from
../shared/realcases when present (else the tiny one, whose 2048 tokens leave most generated ids without
text). Requests alternate between the base and two random adapters, so batches mix adapters. Each client
sends ``--requests`` streamed chat requests one after another (greedy, a fixed reply length: no stop
tokens) over a real socket with the official openai client. Columns: ``tok/s`` = completion tokens of all clients / wall
time; ``ttft p50/p95`` = time from sending a request to its first streamed text.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHI2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "realcases" / "01_phi2_tokenizer" / "tokenizer.json"
PROMPTS = [
    "Tell me about the sea.",
    "What is a good name for a cat?",
    "Write a short poem about rain.",
    "How do bees make honey?",
    "Describe a sunset.",
    "What is the capital of France?",
]


def build_model(name: str):
    """An InferenceModel for ``name`` (tiny or phi2w2) carrying two random adapters, a and b."""
    import torch

    import lora_core
    import phi_models
    from philora.inference import InferenceModel

    tokenizer = phi_models.load_tokenizer("tiny")
    if name == "tiny":
        model = phi_models.from_pretrained("tiny")
    else:
        if PHI2_TOKENIZER.is_file():  # the real phi-2 tokenizer: generated ids decode to text as on phi-2
            tokenizer = phi_models.load_tokenizer(str(PHI2_TOKENIZER.parent))
        config = phi_models.PhiConfig(
            model_type="phi",
            vocab_size=51200,
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=2,
            num_attention_heads=32,
            partial_rotary_factor=0.4,
            max_position_embeddings=2048,
            hidden_act="gelu_new",
        )
        model = phi_models.PhiForCausalLM(config)
        model.init_weights(seed=0)
    gen = torch.Generator().manual_seed(0)
    for adapter in ("a", "b"):
        lora_core.inject(model, targets=["qkv_proj", "dense"], r=16, lora_alpha=16, adapter_name=adapter)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    # No stop ids: every reply runs to max_tokens, so runs compare equal work.
    template = "phi3" if name == "tiny" else "human_assistant"  # a base model's template for the phi-2 shape
    return InferenceModel(
        model=model.eval(), tokenizer=tokenizer, template=template, stop_ids=[], stop_strings=(), name=name
    )


def run_clients(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` threads each streaming ``requests`` chat requests; returns tok/s and TTFT percentiles."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    models = ["bench", "a", "b"]

    def one_client(index: int) -> tuple[list[float], int]:
        ttfts, tokens = [], 0
        for r in range(requests):
            start = time.perf_counter()
            first = None
            stream = client.chat.completions.create(
                model=models[(index + r) % 3],
                messages=[{"role": "user", "content": PROMPTS[(index + r) % 6]}],
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage is not None:
                    tokens += chunk.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - start)
        return ttfts, tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start
    ttfts = sorted(t for ts, _ in results for t in ts)
    tokens = sum(n for _, n in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return {"tok/s": tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_p95": p95, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "phi2w2"], choices=["tiny", "phi2w2"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client, sent one after another")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "philora"))
    from serving import LiveServer  # tests/philora/serving.py: uvicorn in a thread on 127.0.0.1

    from philora.commands.serve import build_state

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.requests} requests per client, "
        f"{args.max_tokens} tokens each, greedy, streamed"
    )
    print(f"{'model':8} {'mode':10} {'clients':>7} {'tok/s':>9} {'ttft p50':>10} {'ttft p95':>10}")
    for name in args.models:
        loaded = build_model(name)
        for mode, max_batch in (("batched", 16), ("one-by-one", 1)):
            state = build_state(loaded, "bench", [], max_batch=max_batch, max_queue=64)
            state.adapters.update({"a": "a", "b": "b"})
            live = LiveServer(state)
            try:
                run_clients(live.url, 1, 1, 4)  # warm-up
                for clients in args.clients:
                    row = run_clients(live.url, clients, args.requests, args.max_tokens)
                    print(
                        f"{name:8} {mode:10} {clients:>7} {row['tok/s']:>9.1f} {row['ttft_p50'] * 1000:>8.0f}ms "
                        f"{row['ttft_p95'] * 1000:>8.0f}ms",
                        flush=True,
                    )
            finally:
                live.close()


if __name__ == "__main__":
    main()
