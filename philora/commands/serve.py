"""``philora serve RUN_OR_MODEL [--adapter NAME=PATH ...]``: the OpenAI-compatible server.

Needs the ``serve`` extra (``pip install "philora[serve]"``: starlette + uvicorn). See docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from philora.commands._inference_options import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora serve``."""
    add_model_arguments(parser, adapter_help="")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve an adapter (our file, PEFT directory or run directory) as model NAME; repeatable",
    )
    parser.add_argument(
        "--served-name",
        default=None,
        help="the name clients use for the base model (None: RUN_OR_MODEL's model name); "
        "a run's own adapter is served under the run directory's name",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (keep 127.0.0.1 unless you mean it)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port, printed at start)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /v1/ (None: $PHILORA_API_KEY if set, else no key)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together in one forward pass")
    parser.add_argument("--max-queue", type=int, default=32, help="requests that may wait for a slot; more get 429")
    parser.add_argument("--max-tokens", type=int, default=256, help="reply length when a request sets no max_tokens")
    parser.add_argument(
        "--no-runtime-adapters",
        action="store_true",
        help="refuse POST /v1/load_lora_adapter (loading files named by clients)",
    )


def parse_adapter_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=PATH`` options as (name, path) pairs, or a CommandError naming the bad one."""
    from lora_core import LoRAError
    from lora_core.adapters import check_adapter_name
    from philora.commands.common import CommandError

    pairs, seen = [], set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"--adapter {spec!r}: write NAME=PATH, e.g. --adapter pirate=runs/tiny-pirate")
        try:
            check_adapter_name(name)
        except LoRAError as err:
            raise CommandError(f"--adapter {spec!r}: {err}") from None
        if name in seen:
            raise CommandError(f"--adapter {spec!r}: the name {name!r} is given twice")
        seen.add(name)
        pairs.append((name, path))
    return pairs


def build_state(
    loaded,
    target: str,
    adapters: list[tuple[str, str]],
    *,
    served_name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 32,
    max_tokens: int = 256,
    api_key: str | None = None,
    runtime_adapters: bool = True,
):
    """The ServerState for a loaded model: its base name, its run's adapter, and the NAME=PATH adapters."""
    from pathlib import Path

    from philora.commands._inference_options import pad_id_of
    from philora.serving.app import ServerState, attach_named_adapter
    from philora.serving.engine import BatchEngine

    run = loaded.run
    base_name = served_name or (run.base_model if run is not None else str(target))
    served: dict[str, str] = {}
    if run is not None:
        served[Path(run.path).name] = "default"
    for name, path in adapters:
        if name == base_name or name in served:
            from philora.commands.common import CommandError

            raise CommandError(f"--adapter {name}={path}: the name {name!r} is already served")
        attach_named_adapter(loaded.model, name, path)
        served[name] = name
    engine = BatchEngine(
        loaded.model, loaded.tokenizer, max_batch=max_batch, max_queue=max_queue, pad_id=pad_id_of(loaded.tokenizer)
    )
    return ServerState(
        loaded=loaded,
        engine=engine,
        base_name=base_name,
        adapters=served,
        default_max_tokens=max_tokens,
        api_key=api_key or None,
        runtime_adapters=runtime_adapters,
    )


def run(args: argparse.Namespace) -> int:
    """Load, bind and serve until interrupted; returns the exit code."""
    from philora.commands.common import CommandError, user_errors

    try:
        try:
            import uvicorn  # noqa: F401  (checked here: the extra may be missing)

            from philora.serving.app import create_app
        except ImportError as err:
            raise CommandError(
                f'philora serve needs the serve extra ({err.name} is missing): pip install "philora[serve]"'
            ) from None
        for flag, value in (("--max-batch", args.max_batch), ("--max-tokens", args.max_tokens)):
            if value < 1:
                raise CommandError(f"{flag} must be >= 1, got {value}")
        if args.max_queue < 0:
            raise CommandError(f"--max-queue must be >= 0, got {args.max_queue}")
        adapters = parse_adapter_specs(args.adapter)
        sock = _bind(args.host, args.port)
        from philora.commands._inference_options import load_from_args

        loaded = load_from_args(args, with_adapter=False)
        api_key = args.api_key or os.environ.get("PHILORA_API_KEY")
        state = build_state(
            loaded,
            args.target,
            adapters,
            served_name=args.served_name,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            max_tokens=args.max_tokens,
            api_key=api_key,
            runtime_adapters=not args.no_runtime_adapters,
        )
    except user_errors() as err:
        print(f"philora serve: error: {err}", file=sys.stderr, flush=True)
        return 2
    host, port = sock.getsockname()[:2]
    names = ", ".join([state.base_name, *state.adapters])
    print(f"serving {names} at http://{host}:{port}/ (OpenAI API under /v1, chat page at /)", flush=True)
    serve_on(create_app(state), sock)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    from philora.commands.common import CommandError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise CommandError(
            f"--host {host} --port {port}: cannot listen there ({err.strerror}); pick another port"
        ) from None
    sock.listen(128)
    return sock


def serve_on(app, sock: socket.socket) -> None:
    """Run uvicorn on an already bound socket until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the SIGINT it caught
        pass
    print("server stopped", flush=True)
