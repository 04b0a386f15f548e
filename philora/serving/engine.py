"""The batching engine: one thread owns the model; requests for any adapter share its forward passes.

Continuous batching: between two decoding steps, finished and cancelled rows leave the batch (their
KV-cache rows are dropped) and waiting requests join it (prefilled together, their caches left-padded
onto the batch's). Each row goes through its own adapter's low-rank path inside the same forward
(``lora_core.adapter_rows``), over one copy of the base weights. Each row samples with its own
parameters and its own seeded generator, and every row attends only to its own keys, so a request
gets the tokens it would get alone (greedy: the same argmax; tests check exact equality).

Requests beyond ``max_batch`` running rows wait in a queue of at most ``max_queue``; ``submit``
raises ``QueueFull`` beyond that (the server answers 429). Work that changes the model (loading
and unloading adapters) runs on the engine thread between steps (``call``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from phi_models import KVCache, SamplingParams, TextStream
from phi_models.sampling import choose_tokens


class QueueFull(Exception):
    """Every batch slot and queue place is taken."""


@dataclass
class Job:
    """One request: its prompt ids, adapter, sampling, and where its text goes.

    ``on_event(kind, payload)`` is called from the engine thread: ``("text", str)`` for each decoded
    increment, then once ``("done", finish_reason)`` with ``finish_reason`` "stop", "length",
    "cancelled" or "error: ..."."""

    prompt_ids: list[int]
    adapter: str | None
    params: SamplingParams
    max_new_tokens: int
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    seed: int | None
    on_event: Callable[[str, Any], None]
    id: int = field(default_factory=itertools.count().__next__)
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    stream: TextStream | None = None
    generator: torch.Generator | None = None


class BatchEngine:
    """Runs submitted Jobs on ``model`` in one background thread, ``max_batch`` rows at a time."""

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_queue: int = 32, pad_id: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self._waiting: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="philora-engine", daemon=True)
        # The batch being decoded: its jobs, their KV cache, last tokens (B,) and seen-token masks (B, V).
        self._rows: list[Job] = []
        self._cache: KVCache | None = None
        self._last: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None
        self.forward_passes = 0  # statistics: forwards run, the largest batch, finish reasons
        self.peak_batch = 0
        self.finished: collections.Counter[str] = collections.Counter()

    # ---- the request side (any thread) ---------------------------------------------------------

    def start(self) -> BatchEngine:
        """Start the engine thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Cancel everything and end the engine thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFull when ``max_batch`` jobs run and ``max_queue`` wait already."""
        with self._wake:
            if len(self._rows) + len(self._waiting) >= self.max_batch + self.max_queue:
                raise QueueFull(f"all {self.max_batch} batch slots and {self.max_queue} queue places are taken")
            self._waiting.append(job)
            self._wake.notify_all()

    def cancel(self, job: Job) -> None:
        """Stop ``job``: a waiting one leaves the queue now, a running one before the next step."""
        with self._wake:
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled")
            self._wake.notify_all()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the engine thread between steps (it may change the model); returns its Future."""
        future: Future = Future()
        with self._wake:
            self._calls.append((fn, future))
            self._wake.notify_all()
        return future

    def load(self) -> dict[str, int]:
        """Running and waiting request counts."""
        with self._wake:
            return {"running": sum(not j.cancelled for j in self._rows), "waiting": len(self._waiting)}

    def adapters_in_use(self) -> set[str | None]:
        """Adapters of running or waiting jobs."""
        with self._wake:
            return {j.adapter for j in itertools.chain(self._rows, self._waiting)}

    # ---- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._rows or self._calls):
                    self._wake.wait()
                if self._stopping:
                    for job in list(self._waiting) + self._rows:
                        self._finish(job, "cancelled")
                    return
                calls = list(self._calls)
                self._calls.clear()
                free = self.max_batch - len(self._rows)
                joining = []
                while self._waiting and len(joining) < free:
                    joining.append(self._waiting.popleft())
            for fn, future in calls:
                _run_call(fn, future)
            try:
                with torch.no_grad():
                    if joining:
                        self._prefill(joining)
                    elif self._rows:
                        self._decode_step()
                    self._drop_finished()
            except Exception as err:  # a bug or an out-of-memory: fail the batch, keep serving
                for job in self._rows + joining:
                    self._finish(job, f"error: {type(err).__name__}: {err}")
                self._rows, self._cache, self._last, self._seen = [], None, None, None

    def _adapter_scope(self, names: list[str | None]):
        import lora_core

        if not lora_core.lora_layers(self.model):
            return contextlib.nullcontext()
        return lora_core.adapter_rows(self.model, names)

    def _prefill(self, jobs: list[Job]) -> None:
        """Run the new jobs' prompts as one left-padded batch, pick their first tokens, join the batch."""
        for job in jobs:
            if job.cancelled:
                self._finish(job, "cancelled")
        jobs = [j for j in jobs if not j.cancelled]
        if not jobs:
            return
        longest = max(len(j.prompt_ids) for j in jobs)
        tokens = torch.full((len(jobs), longest), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(jobs), longest), dtype=torch.long, device=self.device)
        seen = torch.zeros((len(jobs), self.vocab_size), dtype=torch.bool, device=self.device)
        for b, job in enumerate(jobs):
            ids = torch.tensor(job.prompt_ids, dtype=torch.long, device=self.device)
            tokens[b, longest - len(ids) :], mask[b, longest - len(ids) :] = ids, 1
            seen[b, ids] = True
            job.stream = TextStream(self.tokenizer, job.stop_strings)
            if job.seed is not None:
                job.generator = torch.Generator(device=self.device).manual_seed(job.seed)
        cache = self.model.new_cache(longest + max(j.max_new_tokens for j in jobs))
        cache.ids_checked = True  # prompts were range-checked when the request came in
        with self._adapter_scope([j.adapter for j in jobs]):
            logits = self.model(tokens, attention_mask=mask, kv_cache=cache)[:, -1]
        self.forward_passes += 1
        chosen = self._choose(jobs, logits, seen)
        if self._cache is None:
            self._rows, self._cache, self._last, self._seen = jobs, cache, chosen, seen
        else:
            self._cache = KVCache.concat([self._cache, cache])
            self._rows = self._rows + jobs
            self._last = torch.cat([self._last, chosen])
            self._seen = torch.cat([self._seen, seen])

    def _decode_step(self) -> None:
        """Feed every row its last token; choose each row's next one."""
        feed = self._last[:, None]  # (B, 1)
        self.peak_batch = max(self.peak_batch, len(self._rows))
        with self._adapter_scope([j.adapter for j in self._rows]):
            logits = self.model(feed, attention_mask=torch.ones_like(feed), kv_cache=self._cache)[:, -1]
        self.forward_passes += 1
        self._last = self._choose(self._rows, logits, self._seen)

    def _choose(self, jobs: list[Job], logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Sample each job's next token from logits (B, V), record and stream it; returns the tokens (B,)."""
        chosen = choose_tokens(logits.float(), [j.params for j in jobs], [j.generator for j in jobs], seen)
        seen[torch.arange(len(jobs), device=self.device), chosen] = True
        for job, token in zip(jobs, chosen.tolist()):
            if job.cancelled or job.finish_reason is not None:
                continue
            if token in job.stop_ids:
                self._finish(job, "stop")
                continue
            job.output_ids.append(token)
            piece = job.stream.push(token)
            if piece:
                job.on_event("text", piece)
            if job.stream.stopped:
                self._finish(job, "stop")
            elif len(job.output_ids) >= job.max_new_tokens:
                self._finish(job, "length")
        return chosen

    def _finish(self, job: Job, reason: str) -> None:
        if job.finish_reason is not None:
            return
        if reason in ("length", "stop") and job.stream is not None:
            rest = job.stream.finish()
            if rest:
                job.on_event("text", rest)
        job.finish_reason = reason
        self.finished[reason.split(":")[0]] += 1
        job.on_event("done", reason)

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows from the batch (and their cache rows)."""
        for job in self._rows:
            if job.cancelled:
                self._finish(job, "cancelled")
        keep = [i for i, j in enumerate(self._rows) if j.finish_reason is None]
        if len(keep) == len(self._rows):
            return
        with self._wake:
            if not keep:
                self._rows, self._cache, self._last, self._seen = [], None, None, None
                return
            self._rows = [self._rows[i] for i in keep]
            self._cache.select_rows(keep)
            index = torch.tensor(keep, device=self.device)
            self._last, self._seen = self._last[index], self._seen[index]


def _run_call(fn: Callable[[], Any], future: Future) -> None:
    try:
        future.set_result(fn())
    except Exception as err:  # handed to the caller, who turns it into an HTTP error
        future.set_exception(err)
