"""OpenAI's request and response shapes: parsing and checking request bodies, building replies.

Every problem with a request becomes an ``APIError`` (status, message, param, code) that the server
turns into OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from phi_models import PhiModelError, SamplingParams

MAX_STOP_STRINGS = 4  # OpenAI's limit


class APIError(Exception):
    """A request the server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        """OpenAI's JSON error body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    """A checked /v1/chat/completions or /v1/completions request."""

    model: str
    messages: list[dict] | None  # chat
    prompt: str | None  # completions
    max_tokens: int | None
    params: SamplingParams
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _number(body: dict, name: str, default, lo: float, hi: float, integer: bool = False, lo_open: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok or (isinstance(value, float) and not math.isfinite(value)):
        raise APIError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, got {value!r}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        lower = f"{'>' if lo_open else '>='} {lo}"
        raise APIError(400, f"'{name}' must be {lower} and <= {hi}, got {value!r}", name)
    return value


def _text_content(content: Any, where: str) -> str:
    """Message content as text: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise APIError(400, f"{where}.content must be a string or a list of text parts", "messages")


def parse_request(body: dict, chat: bool, default_max_tokens: int | None) -> CompletionRequest:
    """Check a completion request body; raises APIError (400) naming the field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: one of the names GET /v1/models lists", "model")
    messages, prompt = None, None
    if chat:
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise APIError(400, "'messages' must be a non-empty list of {role, content}", "messages")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise APIError(400, f"messages[{i}] needs a role of system, user or assistant", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            messages.append({"role": role, "content": _text_content(m.get("content"), f"messages[{i}]")})
        if messages[-1]["role"] != "user":
            raise APIError(400, "the last message must come from the user", "messages")
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise APIError(400, "'prompt' must be a non-empty string (one prompt per request)", "prompt")
        if body.get("echo") or body.get("suffix"):
            raise APIError(400, "'echo' and 'suffix' are not supported", "echo" if body.get("echo") else "suffix")
    if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
        raise APIError(400, "only n=1 is supported", "n")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
        raise APIError(400, "'logprobs' is not supported", "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0:
            raise APIError(400, f"'{name}' is not supported (use repetition_penalty)", name)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) if chat else body.get("max_tokens")
    if max_tokens is not None:
        max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", None, 1, 10**9, integer=True)
    else:
        max_tokens = default_max_tokens
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)  # OpenAI's default 1; 0 = greedy
    top_p = _number(body, "top_p", None, 0.0, 1.0, lo_open=True)
    top_k = _number(body, "top_k", None, -1, 10**9, integer=True)
    top_k = None if top_k in (-1, 0) else top_k  # vLLM: -1 = off
    min_p = _number(body, "min_p", None, 0.0, 1.0)
    repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.0, 100.0, lo_open=True)
    seed = _number(body, "seed", None, -(2**63), 2**63 - 1, integer=True)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stop = tuple(stop)
    else:
        raise APIError(400, "'stop' must be a string or a list of strings", "stop")
    if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
        raise APIError(400, f"'stop' takes at most {MAX_STOP_STRINGS} non-empty strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", "stream_options")
    try:
        params = SamplingParams(float(temperature), top_k, top_p, min_p, float(repetition_penalty))
    except PhiModelError as err:
        raise APIError(400, str(err)) from None
    return CompletionRequest(
        model=model,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        params=params,
        seed=seed,
        stop=stop,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
    )


# ---- replies -----------------------------------------------------------------------------------


def new_id(chat: bool) -> str:
    """A fresh response id in OpenAI's style."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(chat: bool, rid: str, model: str, text: str, finish_reason: str, use: dict) -> dict:
    """A whole (non-streamed) chat.completion or text_completion."""
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": use,
    }


def chunk_body(
    chat: bool, rid: str, model: str, text: str | None, finish_reason: str | None, first: bool = False
) -> dict:
    """One streamed chunk: a text increment, or (``finish_reason`` set) the closing chunk."""
    if chat:
        delta: dict = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def usage_chunk(chat: bool, rid: str, model: str, use: dict) -> dict:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


def sse(data: dict | str) -> bytes:
    """One server-sent event line pair."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()
