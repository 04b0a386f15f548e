"""BatchEngine: rows joining and leaving mid-decoding give each request its tokens alone; queue limits."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import phi_models
from phi_models import KVCache, SamplingParams
from philora.serving.engine import BatchEngine, Job, QueueFull


@pytest.fixture(scope="module")
def tiny():
    return phi_models.from_pretrained("tiny"), phi_models.load_tokenizer("tiny")


def _job(prompt, max_new_tokens, seed=None, params=None):
    done = threading.Event()
    job = Job(
        prompt_ids=prompt,
        adapter=None,
        params=SamplingParams() if params is None else params,
        max_new_tokens=max_new_tokens,
        stop_ids=frozenset(),
        stop_strings=(),
        seed=seed,
        on_event=lambda kind, payload: kind == "done" and done.set(),
    )
    return job, done


def test_staggered_joins_and_leaves_equal_generate_alone(tiny):
    model, tok = tiny
    prompts = [
        tok.encode(t)
        for t in [
            "Hello there",
            "Once upon a time, in a land far away",
            "Hi",
            "The quick fox",
            "A",
            "What is love? Tell me more about it",
        ]
    ]
    lengths = [9, 4, 12, 6, 10, 3]
    sampled = SamplingParams(temperature=1.0, top_p=0.9)
    engine = BatchEngine(model, tok, max_batch=3, max_queue=8).start()
    try:
        jobs = []
        for i, (prompt, n) in enumerate(zip(prompts, lengths)):
            jobs.append(_job(prompt, n, seed=i if i % 2 else None, params=sampled if i % 2 else SamplingParams()))
            engine.submit(jobs[-1][0])
            time.sleep(0.005 * i)  # arrivals while others decode: rows join a running batch
        for _, done in jobs:
            assert done.wait(60)
    finally:
        engine.stop()
    for i, ((job, _), prompt, n) in enumerate(zip(jobs, prompts, lengths)):
        kwargs = dict(temperature=1.0, top_p=0.9, seed=i) if i % 2 else {}
        assert job.output_ids == phi_models.generate(model, prompt, max_new_tokens=n, **kwargs)[0], i
        assert job.finish_reason == "length"
    assert engine.peak_batch == 3


def test_queue_limit_and_cancelling_a_waiting_job(tiny):
    model, tok = tiny
    engine = BatchEngine(model, tok, max_batch=1, max_queue=1)  # not started: jobs stay where they are
    running, _ = _job([1, 2], 4)
    waiting, waiting_done = _job([1, 2], 4)
    engine.submit(running)
    engine.submit(waiting)
    with pytest.raises(QueueFull):
        engine.submit(_job([1], 1)[0])
    engine.cancel(waiting)
    assert waiting_done.is_set() and waiting.finish_reason == "cancelled" and engine.load()["waiting"] == 1
    engine.submit(_job([3], 1)[0])  # the cancelled job's place is free again


def test_cache_concat_and_select_rows_match_separate_caches(tiny):
    model, _ = tiny
    a, b = torch.tensor([[5, 6, 7, 8, 9, 10]]), torch.tensor([[11, 12]])
    with torch.no_grad():
        cache_a, cache_b = model.new_cache(), model.new_cache()
        model(a, attention_mask=torch.ones_like(a), kv_cache=cache_a)
        model(b, attention_mask=torch.ones_like(b), kv_cache=cache_b)
        joined = KVCache.concat([cache_a, cache_b])
        step = torch.tensor([[3], [4]])
        both = model(step, attention_mask=torch.ones_like(step), kv_cache=joined)[:, -1]
        alone_b = model(step[1:], attention_mask=torch.ones_like(step[1:]), kv_cache=cache_b)[:, -1]
        torch.testing.assert_close(both[1:], alone_b, rtol=1e-5, atol=1e-5)
        joined.select_rows([1])  # row b alone again: the padding columns it never used are dropped
        assert joined.length == cache_b.length
        nxt = torch.tensor([[6]])
        torch.testing.assert_close(
            model(nxt, attention_mask=torch.ones_like(nxt), kv_cache=joined),
            model(nxt, attention_mask=torch.ones_like(nxt), kv_cache=cache_b),
            rtol=1e-5,
            atol=1e-5,
        )
