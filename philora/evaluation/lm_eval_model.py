"""philora as an lm-evaluation-harness model: ``--model philora --model_args pretrained=RUN_OR_MODEL[,adapter=FILE]``.

Importing this module registers the name ``philora`` with lm_eval (the ``lm-eval`` extra). lm_eval 0.4
discovers no out-of-tree models by itself, so ``philora lm-eval ...`` (this registration, then lm_eval's own
command line) is the command; from Python, import this module and call ``lm_eval.simple_evaluate(model="philora")``.

Scores come from our model's own forward: the log-probability of a continuation is the sum over its
tokens of ``log_softmax(lm_head(hidden))`` at the positions that predict them, computed in fp32 from the
hidden states of only those positions (no full-vocabulary logits of whole rows). Requests run in batches
of ``batch_size`` rows, longest first, right-padded and masked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from philora.evaluation.errors import EvalError
from philora.evaluation.target import load_target
from philora.training.gen_eval import generate_replies

DEFAULT_BATCH_SIZE = 8
logger = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKS = 256


def _as_batch_size(value: Any) -> int:
    # lm_eval passes --batch_size through as given: an int, a digit string, or "auto" (not measured here)
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise EvalError(f"batch_size={value!r}: give a number of rows") from None
    if size < 1:
        raise EvalError(f"batch_size={size}: must be >= 1")
    return size


@register_model("philora")
class PhiloraLM(TemplateLM):
    """A philora run or Phi model (dense or 4-bit, with or without an adapter) for lm_eval's tasks."""

    def __init__(
        self,
        pretrained: str,
        adapter: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        batch_size: Any = None,
        max_length: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        **_unused: Any,
    ) -> None:
        super().__init__()
        device = None if device in (None, "auto") else str(device).split(":")[0]
        if device == "cuda" and not torch.cuda.is_available():
            # lm_eval's command line always passes --device (default cuda:0): on a machine without CUDA
            # keep the run's own device setting, as lm_eval's HF model falls back too
            logger.warning("device %s requested but CUDA is not available; using the run's device setting", device)
            device = None
        self.target = load_target(str(pretrained), adapter=adapter, device=device, precision=precision)
        self.model = self.target.model
        self.tokenizer = self.target.tokenizer
        self.pretrained = str(pretrained)
        self._batch_size = _as_batch_size(batch_size)
        context = self.model.config.max_position_embeddings
        self._max_length = min(int(max_length), context) if max_length else context
        self.max_gen_toks = int(max_gen_toks)
        self._device = self.target.precision.device
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # --- what TemplateLM needs ---------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        """The end-of-text id (Phi's EOS)."""
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context is replaced with: BOS where the tokenizer has one, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        """The longest sequence scored at once (the model's context unless max_length= says less)."""
        return self._max_length

    @property
    def batch_size(self) -> int:
        """Rows per forward pass."""
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        """Names the tokenizer for lm_eval's request cache."""
        return self.pretrained

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Our tokenizer's ids (it adds no BOS/EOS of its own)."""
        return self.tokenizer.encode(string)

    def tok_decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens dropped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation in the model's chat format (``--apply_chat_template``)."""
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # --- scoring -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def continuation_logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities of ``continuation``, whether greedy decoding gives it) for each pair.

        A pair longer than ``max_length + 1`` tokens keeps its last ``max_length + 1``.
        """
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        rows = []
        for index, (context, continuation) in enumerate(pairs):
            if not continuation:
                results[index] = (0.0, True)
                continue
            whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append((index, whole[:-1], list(continuation)))
        rows.sort(key=lambda row: -len(row[1]))  # similar lengths together, the longest batch first
        for first in range(0, len(rows), self.batch_size):
            batch = rows[first : first + self.batch_size]
            longest = max(len(inputs) for _, inputs, _ in batch)
            ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for b, (_, inputs, _) in enumerate(batch):
                ids[b, : len(inputs)] = torch.tensor(inputs)
                mask[b, : len(inputs)] = 1
            with self.target.precision.autocast():
                hidden = self.model.hidden_states(ids.to(self._device), attention_mask=mask.to(self._device))
                for b, (index, inputs, continuation) in enumerate(batch):
                    # the last len(continuation) input positions predict the continuation's tokens
                    picked = hidden[b, len(inputs) - len(continuation) : len(inputs)]  # (C, D)
                    logprobs = self.model.lm_head(picked).float().log_softmax(-1)  # (C, V)
                    wanted = torch.tensor(continuation, device=logprobs.device)
                    total = float(logprobs.gather(1, wanted[:, None]).sum())
                    results[index] = (total, bool((logprobs.argmax(-1) == wanted).all()))
        return results  # type: ignore[return-value]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """lm_eval's hook: ((context, continuation), context ids, continuation ids) -> (logprob, is_greedy)."""
        answers = self.continuation_logprobs([(context, continuation) for _, context, continuation in requests])
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents, in disjoint windows of at most ``max_length`` tokens."""
        windows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self.continuation_logprobs(windows)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generate for each (context, gen_kwargs) and cut the text at the first ``until`` string."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        for _key, indices in groups.items():
            options = dict(requests[indices[0]].args[1])
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.pop("max_gen_toks", self.max_gen_toks))
            sampling = {}
            if options.pop("do_sample", False) and float(options.get("temperature", 1.0)) > 0:
                sampling = {
                    "temperature": float(options.get("temperature", 1.0)),
                    "top_p": options.get("top_p"),
                    "top_k": options.get("top_k"),
                    "seed": options.get("seed"),
                }
            prompts = [self.tok_encode(requests[i].args[0]) or [self.prefix_token_id] for i in indices]
            replies = generate_replies(
                self.model,
                prompts,
                max_new_tokens=max_new,
                stop_ids=self.tokenizer.stop_token_ids,
                pad_id=self.pad_id,
                batch_size=self.batch_size,
                precision=self.target.precision,
                **sampling,
            )
            for i, reply in zip(indices, replies):
                text = self.tok_decode(reply.ids)
                for stop in until:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                answers[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return answers  # type: ignore[return-value]
