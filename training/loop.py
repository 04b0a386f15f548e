"""The training loop: token-normalized gradient accumulation, clipping, evaluation, checkpoints, stops.

:func:`accumulate_window` and :func:`evaluate` are the numerical core; :meth:`Trainer.fit` drives them
over epochs, as the run's :class:`~training.config.TrainConfig` says, and handles logging, checkpoints,
signals, time limits and non-finite losses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from philora.training.checkpoint import TrainingState, save_checkpoint
from philora.training.config import TrainConfig
from philora.training.errors import TrainingError
from philora.training.finite import stop_if_weights_non_finite
from philora.training.loss import chunked_lm_loss, count_targets
from philora.training.precision import Precision
from philora.training.progress import MetricsLog, ProgressBar, peak_memory_mb
from philora.training.rng import rng_state
from philora.training.schedule import LRSchedule
from philora.training.signals import stop_after_step

if TYPE_CHECKING:  # for the annotation only: distributed imports this module
    from philora.training.distributed import Distributed

MODEL_KEYS = ("attention_mask", "position_ids", "document_ids")
GEN_SHOWN = ("gen_rougeL", "gen_stop_share")  # generation metrics shown on the eval line


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a batch dict of tensors to ``device`` (no copy when already there)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def micro_batch_loss(model: torch.nn.Module, batch: dict, chunk: int) -> torch.Tensor:
    """Summed next-token loss of one batch (fp32 scalar); the lm_head only sees target positions."""
    hidden = model.hidden_states(batch["input_ids"], **{k: batch[k] for k in MODEL_KEYS if k in batch})
    return chunked_lm_loss(model.lm_head, hidden, batch["targets"], chunk)


def accumulate_window(
    model: torch.nn.Module, micro_batches: list[dict], *, precision: Precision, scaler=None, chunk: int = 256
) -> tuple[float, int]:
    """Backward over one accumulation window; returns (mean token loss of the window, target tokens).

    Every micro-batch's summed loss is divided by the target-token count of the *whole* window,
    counted before any backward, so the accumulated gradient equals that of one big batch.
    """
    window_tokens = sum(count_targets(b["targets"]) for b in micro_batches)
    denominator = max(window_tokens, 1)
    total = torch.zeros((), dtype=torch.float32, device=precision.device)
    for batch in micro_batches:
        with precision.autocast():
            loss = micro_batch_loss(model, batch, chunk) / denominator
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.detach()
    return total.item(), window_tokens


def optimizer_step(params: list[torch.nn.Parameter], optimizer, scaler, max_grad_norm: float) -> float:
    """Unscale (fp16), clip, step and zero the grads; returns the gradient norm before clipping."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if scaler is not None:
        scaler.step(optimizer)  # skips the step when the unscaled grads hold inf/nan
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list[dict],
    *,
    precision: Precision,
    chunk: int = 256,
    max_batches: int | None = None,
) -> dict:
    """Token-weighted mean loss and perplexity over ``batches``; no logits are kept."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=precision.device)
    tokens = 0
    for batch in batches[:max_batches] if max_batches else batches:
        batch = to_device(batch, precision.device)
        with precision.autocast():
            total += micro_batch_loss(model, batch, chunk).double()
        tokens += count_targets(batch["targets"])
    model.train(was_training)
    loss = total.item() / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": tokens}


@dataclass
class FitResult:
    """How a call to :meth:`Trainer.fit` ended."""

    state: TrainingState
    stopped_by: str  # "done" | "time" | "SIGINT" | "SIGTERM"
    last_checkpoint: str | None
    train_seconds: float
    input_tokens: int
    last_eval: dict | None


@dataclass
class Trainer:
    """One run's training loop: what it trains, where it writes, and :meth:`fit`, which runs it.

    The loop's settings are ``cfg``'s own fields (``grad_accum``, ``max_grad_norm``, ``loss_chunk``,
    ``log_every``, ``eval_every``, ``eval_batches``, ``save_every``, ``keep_last``, ``max_time``);
    ``total_steps`` is the run's planned length. Every checkpoint stores ``adapter_config`` with its adapter
    and ``run_config``, the options a ``--resume`` must repeat. ``generation_eval(model)`` (``--eval-generate``)
    adds its metrics to every eval record. ``parallel`` (a ``training.distributed.Distributed`` under torchrun)
    supplies the all-rank versions of the window, evaluation and checkpoint, and makes the ranks stop together.
    """

    cfg: TrainConfig
    total_steps: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None
    precision: Precision
    state: TrainingState
    output_dir: str
    adapter_config: dict = field(default_factory=dict)
    run_config: dict | None = None
    generation_eval: Callable[[torch.nn.Module], dict] | None = None
    parallel: Distributed | None = None

    def fit(
        self,
        epoch_batches: Callable[[int], list[dict]],
        val_batches: list[dict],
        *,
        metrics: MetricsLog,
        progress: ProgressBar,
        last_checkpoint: str | None = None,
    ) -> FitResult:
        """Train until ``total_steps`` optimizer steps (or ``cfg.max_time`` or a signal); closes ``progress``.

        ``epoch_batches(e)`` returns epoch ``e``'s micro-batches (deterministic, so a resumed run
        continues at ``state.epoch``/``state.batch_index``). A non-finite loss stops the run before
        the optimizer touches the weights, with a TrainingError naming the step and ``last_checkpoint``
        (the newest one written before this call); checkpoints already written stay.
        """
        cfg, model, optimizer, schedule, scaler = self.cfg, self.model, self.optimizer, self.schedule, self.scaler
        precision, state, parallel = self.precision, self.state, self.parallel
        accumulate = parallel.accumulate_window if parallel else accumulate_window
        run_evaluate = parallel.evaluate if parallel else evaluate
        write_checkpoint = parallel.save_checkpoint if parallel else save_checkpoint
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        started = time.perf_counter()
        window_started = started
        input_tokens = 0
        tokens_since_log = 0
        last_eval = None
        cached_epoch, batches = None, []

        elapsed_before = state.elapsed
        max_time_s = cfg.max_time * 60 if cfg.max_time else None

        def save() -> str:
            state.elapsed = elapsed_before + time.perf_counter() - started
            path = write_checkpoint(
                self.output_dir,
                model=model,
                optimizer=optimizer,
                schedule=schedule,
                scaler=scaler,
                state=state,
                rng=rng_state(),
                adapter_config=self.adapter_config,
                keep_last=cfg.keep_last,
                run_config=self.run_config,
            )
            return str(path)

        # Under torchrun a rank's validation shard can be empty while another's is not: all ranks must evaluate.
        has_val = parallel.any_rank(bool(val_batches)) if parallel else bool(val_batches)

        def run_eval() -> dict | None:
            if not has_val:
                return None  # no validation split (--val-fraction 0 and none in the source)
            result = run_evaluate(
                model, val_batches, precision=precision, chunk=cfg.loss_chunk, max_batches=cfg.eval_batches
            )
            if state.best_eval_loss is None or result["loss"] < state.best_eval_loss:
                state.best_eval_loss = result["loss"]
            record = {
                "kind": "eval",
                "step": state.step,
                "loss": result["loss"],
                "ppl": result["ppl"],
                "tokens": result["tokens"],
            }
            extra = self.generation_eval(model) if self.generation_eval is not None else {}
            metrics.write({**record, **extra})
            progress.message(
                f"eval @ step {state.step}: loss {result['loss']:.4f}  ppl {result['ppl']:.2f}"
                + "".join(f"  {k[4:]} {v:.3f}" for k, v in extra.items() if k in GEN_SHOWN)
            )
            return result

        stopped_by = "done"
        with stop_after_step() as stop:
            if state.step == 0 and cfg.eval_every:
                last_eval = run_eval()  # the starting point, so the falling loss can be seen
            while state.step < self.total_steps:
                if cached_epoch != state.epoch:
                    batches, cached_epoch = epoch_batches(state.epoch), state.epoch
                    if not batches:
                        raise TrainingError(
                            "the training split produced no batches: use more data or a smaller --batch-size"
                        )
                if state.batch_index >= len(batches):
                    state.epoch, state.batch_index = state.epoch + 1, 0
                    continue
                window = [
                    to_device(b, precision.device)
                    for b in batches[state.batch_index : state.batch_index + cfg.grad_accum]
                ]
                lr = schedule.get_last_lr()
                loss, window_tokens = accumulate(
                    model, window, precision=precision, scaler=scaler, chunk=cfg.loss_chunk
                )
                if not math.isfinite(loss):
                    optimizer.zero_grad(set_to_none=True)
                    where = (
                        f"the last good checkpoint is {last_checkpoint}"
                        if last_checkpoint
                        else "no checkpoint had been saved yet"
                    )
                    raise TrainingError(
                        f"training loss became {loss} at step {state.step + 1}; stopped before updating the weights "
                        f"({where}); try a lower --lr, --precision fp32 or bf16, or check the data"
                    )
                grad_norm = optimizer_step(params, optimizer, scaler, cfg.max_grad_norm)
                stop_if_weights_non_finite(model, state.step + 1, last_checkpoint)
                schedule.step()
                state.step += 1
                state.batch_index += len(window)
                state.tokens_seen += window_tokens
                window_input = (
                    parallel.window_input_tokens if parallel else sum(int(b["attention_mask"].sum()) for b in window)
                )
                input_tokens += window_input
                tokens_since_log += window_input

                now = time.perf_counter()
                if state.step % cfg.log_every == 0 or state.step == self.total_steps:
                    rate = tokens_since_log / max(now - window_started, 1e-9)
                    metrics.write(
                        {
                            "kind": "train",
                            "step": state.step,
                            "epoch": state.epoch,
                            "loss": loss,
                            "lr": lr,
                            "grad_norm": grad_norm,
                            "target_tokens": window_tokens,
                            "tokens_per_s": rate,
                            "peak_mem_mb": peak_memory_mb(precision.device),
                        }
                    )
                    progress.update(state.step, loss=loss, lr=lr, tokens_per_s=rate, force_line=True)
                    window_started, tokens_since_log = now, 0
                if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < self.total_steps:
                    last_eval = run_eval()
                time_up = max_time_s is not None and elapsed_before + (now - started) >= max_time_s
                signal_name = stop.signal_name
                if parallel:  # every rank stops after the same step
                    signal_name, time_up = parallel.agree_on_stop(signal_name, time_up)
                if signal_name or time_up:
                    stopped_by = signal_name or "time"
                    break
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < self.total_steps:
                    last_checkpoint = save()
            if stopped_by in ("done", "time"):
                last_eval = run_eval()
            last_checkpoint = save()
        progress.close()
        return FitResult(
            state=state,
            stopped_by=stopped_by,
            last_checkpoint=last_checkpoint,
            train_seconds=time.perf_counter() - started,
            input_tokens=input_tokens,
            last_eval=last_eval,
        )
