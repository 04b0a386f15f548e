"""The OpenAI-compatible HTTP API (Starlette): chat/completions, models, health, adapters, the chat page.

Served model names map onto adapters of the one loaded model: the base name onto no adapter, each
adapter name onto itself. The ``model`` field of a request picks one (as vLLM's ``--lora-modules``).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from philora.serving.engine import BatchEngine, Job, QueueFull
from philora.serving.protocol import (
    APIError,
    chunk_body,
    completion_body,
    new_id,
    parse_json,
    parse_request,
    sse,
    usage,
    usage_chunk,
)

DISCONNECT_POLL_S = 0.2


@dataclass
class ServerState:
    """What the handlers share: the model, its engine, the served names and the limits."""

    loaded: Any  # philora.inference.InferenceModel
    engine: BatchEngine
    base_name: str
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> adapter name on the model
    default_max_tokens: int = 256
    api_key: str | None = None
    runtime_adapters: bool = True
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def context_length(self) -> int:
        """Most prompt + reply tokens one request may use."""
        config = self.loaded.model.config
        if config.rope_type == "longrope":  # rows join a shared cache: stay in the short-factor regime
            return int(config.original_max_position_embeddings)
        return int(config.max_position_embeddings)

    def adapter_for(self, model: str) -> str | None:
        """The adapter serving ``model`` (None: the base), or a 400 naming the served names."""
        if model == self.base_name:
            return None
        if model in self.adapters:
            return self.adapters[model]
        names = [self.base_name, *self.adapters]
        raise APIError(
            400, f"model {model!r} is not served here; use one of {names} (GET /v1/models)", "model", "model_not_found"
        )


def create_app(state: ServerState) -> Starlette:
    """The Starlette application over ``state`` (its engine starts and stops with the app)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **state.engine.load()})

    async def chat_page(request: Request) -> Response:
        page = resources.files("philora.serving").joinpath("chat.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    async def models(request: Request) -> Response:
        def card(name: str, parent: str | None) -> dict:
            return {
                "id": name,
                "object": "model",
                "created": state.created,
                "owned_by": "philora",
                "root": state.base_name if parent else name,
                "parent": parent,
            }

        data = [card(state.base_name, None)] + [card(n, state.base_name) for n in state.adapters]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        return await _completion(request, chat=True)

    async def completions(request: Request) -> Response:
        return await _completion(request, chat=False)

    async def _completion(request: Request, chat: bool) -> Response:
        body = parse_json(await request.body())
        req = parse_request(body, chat, default_max_tokens=None)
        adapter = state.adapter_for(req.model)
        prompt_ids = _prompt_ids(state, req, chat)
        room = state.context_length - len(prompt_ids)
        max_tokens = req.max_tokens if req.max_tokens is not None else min(state.default_max_tokens, room)
        if max_tokens > room:
            raise APIError(
                400,
                f"the prompt is {len(prompt_ids)} tokens and max_tokens {max_tokens}: together more "
                f"than the model's context of {state.context_length} tokens; lower max_tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        stops = req.stop + (state.loaded.stop_strings if chat else ())
        job = Job(
            prompt_ids=prompt_ids,
            adapter=adapter,
            params=req.params,
            max_new_tokens=max_tokens,
            stop_ids=frozenset(state.loaded.stop_ids),
            stop_strings=stops,
            seed=req.seed,
            on_event=lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload)),
        )
        try:
            state.engine.submit(job)
        except QueueFull as err:
            raise APIError(
                429,
                f"the server is at capacity ({err}); retry shortly",
                None,
                "rate_limit_exceeded",
                "rate_limit_error",
            ) from None
        rid = new_id(chat)
        if req.stream:
            return StreamingResponse(
                _stream(state, job, events, chat, rid, req),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _whole(state, request, job, events, chat, rid, req.model)

    async def load_adapter(request: Request) -> Response:
        body = parse_json(await request.body())
        name, path = body.get("lora_name"), body.get("lora_path")
        if not state.runtime_adapters:
            raise APIError(400, "loading adapters at run time is switched off (--no-runtime-adapters)")
        if not isinstance(name, str) or not isinstance(path, str) or not name or not path:
            raise APIError(
                400,
                "give 'lora_name' and 'lora_path' (an adapter file, PEFT directory or run)",
                "lora_name" if not isinstance(name, str) or not name else "lora_path",
            )
        if name == state.base_name or name in state.adapters:
            raise APIError(400, f"an adapter named {name!r} is already served; unload it first", "lora_name")
        await _on_engine(state, lambda: attach_named_adapter(state.loaded.model, name, path))
        state.adapters[name] = name
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(request: Request) -> Response:
        body = parse_json(await request.body())
        name = body.get("lora_name")
        if not isinstance(name, str) or name not in state.adapters:
            raise APIError(
                400,
                f"no adapter named {name!r} is served; served adapters: {list(state.adapters)}",
                "lora_name",
                "model_not_found",
            )
        if state.adapters[name] in state.engine.adapters_in_use():
            raise APIError(
                400, f"adapter {name!r} is answering requests now; unload it when they are done", "lora_name"
            )
        adapter = state.adapters.pop(name)
        await _on_engine(state, lambda: _delete_adapter(state.loaded.model, adapter))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def api_error(request: Request, err: APIError) -> Response:
        return JSONResponse(err.body(), status_code=err.status)

    async def http_error(request: Request, err: HTTPException) -> Response:
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    routes = [
        Route("/", chat_page, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/load_lora_adapter", load_adapter, methods=["POST"]),
        Route("/v1/unload_lora_adapter", unload_adapter, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={APIError: api_error, HTTPException: http_error}, lifespan=_lifespan(state)
    )
    if state.api_key:
        app.add_middleware(_BearerAuth, api_key=state.api_key)
    return app


def _lifespan(state: ServerState):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if not state.engine._thread.is_alive():
            state.engine.start()
        try:
            yield
        finally:
            state.engine.stop()

    return lifespan


class _BearerAuth:
    """Requires ``Authorization: Bearer <key>`` on /v1/ routes (the page and /health stay open)."""

    def __init__(self, app, api_key: str):
        self.app, self.api_key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.api_key):
                err = APIError(
                    401, "a valid API key is required: send 'Authorization: Bearer <key>'", None, "invalid_api_key"
                )
                await JSONResponse(err.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _prompt_ids(state: ServerState, req, chat: bool) -> list[int]:
    from philora.data.errors import DataError
    from philora.prompting import render_prompt

    tok = state.loaded.tokenizer
    if chat:
        try:
            text = render_prompt(state.loaded.template, req.messages, tok)
        except DataError as err:
            raise APIError(
                400, f"the messages cannot be rendered in the {state.loaded.template!r} template: {err}", "messages"
            ) from None
    else:
        text = req.prompt
    ids = tok.encode(text)
    if not ids:
        raise APIError(400, "the prompt encodes to no tokens", "messages" if chat else "prompt")
    if len(ids) >= state.context_length:
        raise APIError(
            400,
            f"the prompt is {len(ids)} tokens; the model's context is {state.context_length} "
            f"(with room for a reply): shorten it",
            "messages" if chat else "prompt",
            "context_length_exceeded",
        )
    return ids


async def _whole(state, request: Request, job: Job, events: asyncio.Queue, chat: bool, rid: str, model: str):
    """Wait for the whole reply; a client that goes away cancels the job."""
    pieces = []
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    state.engine.cancel(job)
                    return Response(status_code=499)
                continue
            if kind == "text":
                pieces.append(payload)
                continue
            if payload.startswith("error"):
                raise APIError(500, f"generation failed: {payload}", None, None, "server_error")
            use = usage(len(job.prompt_ids), len(job.output_ids))
            return JSONResponse(completion_body(chat, rid, model, "".join(pieces), _reason(payload), use))
    finally:
        if job.finish_reason is None:
            state.engine.cancel(job)


async def _stream(state, job: Job, events: asyncio.Queue, chat: bool, rid: str, req):
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``; closing the stream cancels."""
    try:
        if chat:
            yield sse(chunk_body(chat, rid, req.model, None, None, first=True))
        while True:
            kind, payload = await events.get()
            if kind == "text":
                yield sse(chunk_body(chat, rid, req.model, payload, None))
                continue
            if payload.startswith("error"):
                yield sse(APIError(500, f"generation failed: {payload}", None, None, "server_error").body())
            else:
                yield sse(chunk_body(chat, rid, req.model, None, _reason(payload)))
                if req.include_usage:
                    yield sse(usage_chunk(chat, rid, req.model, usage(len(job.prompt_ids), len(job.output_ids))))
            yield sse("[DONE]")
            return
    finally:
        if job.finish_reason is None:  # the client went away mid-stream: free its batch slot now
            state.engine.cancel(job)


def _reason(finish: str) -> str:
    return "length" if finish == "length" else "stop"


async def _on_engine(state: ServerState, fn) -> Any:
    """Run ``fn`` on the engine thread (between decoding steps); its user errors become 400s."""
    from philora.commands.common import user_errors

    try:
        return await asyncio.wrap_future(state.engine.call(fn))
    except user_errors() as err:
        raise APIError(400, str(err)) from None


def attach_named_adapter(model, name: str, path: str | Path) -> None:
    """Add adapter ``name`` from ``path``: our adapter file, a PEFT directory, or a run (its final adapter)."""
    import lora_core
    from lora_core.adapters import check_adapter_name
    from philora.commands.common import CommandError
    from philora.runs import is_run_dir, open_run

    check_adapter_name(name)
    path = Path(path)
    if is_run_dir(path):
        path = open_run(path).adapter_file
    if path.is_dir():
        lora_core.load_peft(model, path, adapter_name=name)
        return
    if not path.is_file():
        raise CommandError(f"{path}: no such adapter file, PEFT directory or run directory")
    lora_core.load_adapter(model, path, strict=True, adapter_name=name)


def _delete_adapter(model, name: str) -> None:
    import lora_core

    lora_core.delete_adapter(model, name)
