"""philora serve over a real socket with the official openai client: adapters, batching, errors, queue."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (test extra) is not installed")

import phi_models  # noqa: E402
from philora.commands.serve import build_state  # noqa: E402
from philora.inference import load_inference_model  # noqa: E402
from philora.prompting import render_prompt  # noqa: E402
from tests.philora.serving import LiveServer, random_adapter  # noqa: E402

PROMPTS = [
    "Hello!",
    "Tell me a story about a dragon.",
    "What is 2 + 2?",
    "Name three colours.",
    "Why is the sky blue?",
    "Write a haiku.",
    "Say something kind.",
    "Who are you?",
]


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    random_adapter(folder / "a.safetensors", seed=1)
    random_adapter(folder / "b.safetensors", seed=2, targets=("dense", "fc2"))
    return {"a": str(folder / "a.safetensors"), "b": str(folder / "b.safetensors")}


def _serve(adapters: dict, **limits) -> LiveServer:
    loaded = load_inference_model("tiny")
    return LiveServer(build_state(loaded, "tiny", list(adapters.items()), **limits))


@pytest.fixture(scope="module")
def server(adapter_files):
    live = _serve(adapter_files, max_batch=16, max_queue=16)
    yield live
    live.close()


def _chat(client, model, prompt, max_tokens=8, **extra):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0, **extra
    )
    return reply.choices[0].message.content, reply.usage.completion_tokens


def _post(url, body: bytes | str, headers=None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_models_chat_completions_and_streaming(server, adapter_files):
    client = server.client()
    assert [m.id for m in client.models.list().data] == ["tiny", "a", "b"]
    # The adapter's server reply equals plain generation on a model carrying only that adapter.
    alone = load_inference_model("tiny", adapter=adapter_files["a"])
    ids = alone.tokenizer.encode(render_prompt(alone.template, [{"role": "user", "content": "Hello!"}]))
    expected = phi_models.generate(alone.model, ids, max_new_tokens=8, stop_ids=alone.stop_ids)[0]
    text, n = _chat(client, "a", "Hello!")
    assert (text, n) == (alone.tokenizer.decode(expected), len(expected))
    assert text != _chat(client, "tiny", "Hello!")[0] != _chat(client, "b", "Hello!")[0]

    stream = client.chat.completions.create(
        model="a",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-2].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens == n

    done = client.completions.create(model="b", prompt="Once upon a time", max_tokens=6, temperature=0)
    streamed = client.completions.create(model="b", prompt="Once upon a time", max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text and done.usage.completion_tokens == 6
    assert done.choices[0].finish_reason == "length" and done.usage.prompt_tokens > 0
    # stop strings cut the text before the stop string.
    cut = client.completions.create(
        model="b", prompt="Once upon a time", max_tokens=6, temperature=0, stop=[done.choices[0].text[3:6]]
    )
    assert cut.choices[0].text == done.choices[0].text[:3] and cut.choices[0].finish_reason == "stop"
    # seeded sampling is reproducible
    seeded = [
        client.completions.create(model="a", prompt="Hi", max_tokens=8, temperature=1.0, top_p=0.9, seed=5)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_sixteen_concurrent_mixed_adapter_requests_equal_alone(server):
    client = server.client()
    requests = [(("tiny", "a", "b")[i % 3], PROMPTS[i % len(PROMPTS)], 4 + i % 5) for i in range(16)]
    alone = [_chat(client, model, prompt, max_tokens) for model, prompt, max_tokens in requests]
    passes_alone = server.state.engine.forward_passes
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda r: _chat(client, *r), requests))
    assert together == alone
    passes_together = server.state.engine.forward_passes - passes_alone
    # Shared forward passes: far fewer than one request at a time needed, with mixed adapters in a batch.
    assert passes_together < sum(n for _, n in alone) and server.state.engine.peak_batch > 3


def test_bad_requests_get_400_and_the_server_keeps_serving(server):
    client = server.client()
    url = server.url + "/v1/chat/completions"
    status, body = _post(url, '{"model": "tiny", "messages": [')
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]["message"]
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, "no-such-model", "Hi")
    assert err.value.status_code == 400 and err.value.body["code"] == "model_not_found"
    for bad in (dict(temperature=5), dict(top_p=0), dict(top_k=-5), dict(max_tokens=-3), dict(seed=1.5)):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], temperature=0, extra_body=bad
            )
        assert err.value.status_code == 400 and err.value.body["param"] in bad, bad
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, "tiny", "word " * 3000)
    assert err.value.body["code"] == "context_length_exceeded"
    status, body = _post(
        url, json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"})
    )
    assert status == 400 and json.loads(body)["error"]["param"] == "temperature"
    status, body = _post(url, '{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "top_p": NaN}')
    assert status == 400 and json.loads(body)["error"]["param"] == "top_p"
    assert _chat(client, "tiny", "Hi")[1] > 0  # still serving


def test_load_and_unload_an_adapter_at_run_time(server, tiny_run):
    client = server.client()
    status, body = _post(
        server.url + "/v1/load_lora_adapter", json.dumps({"lora_name": "roleplay", "lora_path": str(tiny_run)})
    )
    assert status == 200 and "roleplay" in body
    assert "roleplay" in [m.id for m in client.models.list().data]
    alone = load_inference_model(str(tiny_run))
    ids = alone.tokenizer.encode(render_prompt(alone.template, [{"role": "user", "content": "Hello!"}]))
    expected = phi_models.generate(alone.model, ids, max_new_tokens=8, stop_ids=alone.stop_ids)[0]
    assert _chat(client, "roleplay", "Hello!") == (alone.tokenizer.decode(expected), len(expected))
    # The same adapter from the run's PEFT directory answers the same.
    status, body = _post(
        server.url + "/v1/load_lora_adapter",
        json.dumps({"lora_name": "roleplay-peft", "lora_path": str(tiny_run / "peft")}),
    )
    assert status == 200, body
    assert _chat(client, "roleplay-peft", "Hello!") == _chat(client, "roleplay", "Hello!")
    status, _ = _post(server.url + "/v1/load_lora_adapter", json.dumps({"lora_name": "roleplay", "lora_path": "x"}))
    assert status == 400
    status, body = _post(server.url + "/v1/unload_lora_adapter", json.dumps({"lora_name": "roleplay"}))
    assert status == 200
    assert "roleplay" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.BadRequestError):
        _chat(client, "roleplay", "Hello!")
    status, body = _post(
        server.url + "/v1/load_lora_adapter",
        json.dumps({"lora_name": "bad", "lora_path": str(tiny_run / "nothing.safetensors")}),
    )
    assert status == 400 and "nothing.safetensors" in json.loads(body)["error"]["message"]


def _health(live):
    with urllib.request.urlopen(live.url + "/health", timeout=10) as response:
        return json.loads(response.read())


def _wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_queue_overflow_429_and_aborted_stream_frees_its_slot(adapter_files):
    live = _serve({}, max_batch=1, max_queue=1)
    try:
        client = live.client()
        long = dict(model="tiny", prompt="Go on and on", max_tokens=1900, temperature=0, stream=True)
        first = client.completions.create(**long)
        next(iter(first))  # streaming: it holds the one batch slot
        second = client.completions.create(**long)  # waits in the queue (its response starts when it runs)
        _wait_for(lambda: _health(live) == {"status": "ok", "running": 1, "waiting": 1})
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model="tiny", prompt="Hi", max_tokens=2, temperature=0)
        assert err.value.status_code == 429 and err.value.body["code"] == "rate_limit_exceeded"
        first.response.close()  # the client goes away mid-stream
        _wait_for(lambda: _health(live)["waiting"] == 0)  # the queued request took the freed slot
        assert live.state.engine.finished["cancelled"] == 1 and live.state.engine.finished["length"] == 0
        next(iter(second))
        second.response.close()
        _wait_for(lambda: _health(live)["running"] == 0)
        assert client.completions.create(model="tiny", prompt="Hi", max_tokens=2, temperature=0).usage.total_tokens
    finally:
        live.close()


def test_api_key_is_required_when_set():
    loaded = load_inference_model("tiny")
    live = LiveServer(build_state(loaded, "tiny", [], api_key="s3cret"))
    try:
        with pytest.raises(openai.AuthenticationError):
            live.client(api_key="wrong").models.list()
        assert [m.id for m in live.client(api_key="s3cret").models.list().data] == ["tiny"]
        assert _health(live)["status"] == "ok"  # health stays open
    finally:
        live.close()
