"""A live server for tests: philora's app under uvicorn in a thread, on a real socket on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import torch


class LiveServer:
    """Serves ``state`` on 127.0.0.1 at a free port until ``close``."""

    def __init__(self, state):
        import uvicorn

        from philora.commands.serve import _bind
        from philora.serving.app import create_app

        self.state = state
        sock = _bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def client(self, api_key: str = "unused", **kwargs):
        """An official openai client pointed at this server (no retries: tests see every status)."""
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def random_adapter(path, seed: int, targets=("qkv_proj", "fc1")) -> None:
    """Save an adapter on tiny whose random factors change its greedy output."""
    import lora_core
    import phi_models

    model = phi_models.from_pretrained("tiny")
    lora_core.inject(model, targets=list(targets), r=4, lora_alpha=8)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    lora_core.save_adapter(model, path)
