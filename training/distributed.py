"""Training under torchrun: data parallel (DDP) by default, sharded (FSDP2) with ``--fsdp``.

``torchrun --nproc_per_node N train.py ...`` starts N copies of the same command; each reads its
rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/
``MASTER_PORT``). Everything here is PyTorch's own machinery: the process group (gloo on CPU,
nccl on CUDA, one device per rank), ``DistributedDataParallel`` over the LoRA parameters, or
``torch.distributed.fsdp.fully_shard`` per decoder layer, and the DTensor gathers that turn the
shards back into the single-process adapter and optimizer state.

What makes N processes equal one: each rank trains on its own shard of every epoch
(``data.make_batches(rank=, world_size=)``, equal batch counts); each micro-batch's summed loss is
divided by the target tokens of the whole window *over all ranks* (one all-reduce before the
first backward), and the loss is multiplied by the world size because DDP and FSDP average the
gradients over ranks; so the update is the single-process update of the same global batch
(``--batch-size`` x ``--grad-accum`` x ranks). Only rank 0 prints, logs and writes; every rank
waits at a barrier until a checkpoint is complete; all ranks agree after each step whether a
signal or ``--max-time`` stops the run, so they stop after the same step. A collective that fails
or outlasts ``--dist-timeout`` (a rank died or hangs) becomes one error line.

:class:`Distributed` with the defaults is the single-process case: its methods then do what the
plain code does, so ``training.run`` calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
import sys
import types
from dataclasses import dataclass, field

import torch
from torch import nn

from philora.training.errors import TrainingError

ENV_WORLD_SIZE = "WORLD_SIZE"
# Seed offset between ranks' dropout streams (rank 0 keeps the single-process stream).
RANK_SEED_STRIDE = 1_000_003


@dataclass
class Distributed:
    """This process's place in the run: rank, world size, device, and the wrapped model (DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    fsdp: bool = False
    device: torch.device | None = None  # None: single process, training.run resolves --device itself
    window_input_tokens: int = 0  # input tokens of the last window over all ranks (for tokens/s)
    _ddp: nn.Module | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs and writes."""
        return self.rank == 0

    def describe(self) -> str:
        """`` per process, 2 processes (DDP, gloo)`` for the run's opening line; empty for one process."""
        if not self.active:
            return ""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        return f" per process, {self.world_size} processes ({'FSDP2' if self.fsdp else 'DDP'}, {backend})"

    # ---- collectives ----------------------------------------------------------------------

    def _tensor(self, values, dtype=torch.float64) -> torch.Tensor:
        # nccl reduces CUDA tensors only; gloo CPU tensors.
        return torch.tensor(values, dtype=dtype, device=self.device)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            torch.distributed.barrier()

    def run_on_main(self, fn):
        """Run ``fn`` on rank 0 only (it may write); every rank returns its result.

        When ``fn`` fails, rank 0 raises the error (and prints it); the other ranks exit with
        code 2 silently, so a bad option or a busy output directory is reported once.
        """
        if not self.active:
            return fn()
        outcome: list = [None]
        if self.is_main:
            try:
                outcome = [("ok", fn())]
            except BaseException:
                torch.distributed.broadcast_object_list([("failed", None)], src=0)
                raise
        torch.distributed.broadcast_object_list(outcome, src=0)
        status, value = outcome[0]
        if status != "ok":
            raise SystemExit(2)
        return value

    def agree_on_stop(self, signal_name: str | None, time_up: bool) -> tuple[str | None, bool]:
        """Combine every rank's stop reasons, so that all stop after the same step."""
        if not self.active:
            return signal_name, time_up
        flags = self._tensor([signal_name == "SIGINT", signal_name == "SIGTERM", time_up])
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        sigint, sigterm, time_up = (bool(v) for v in flags.tolist())
        return ("SIGTERM" if sigterm else "SIGINT" if sigint else None), time_up

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (a collective: every rank must call it)."""
        if not self.active:
            return flag
        value = self._tensor([flag])
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    # ---- the model ------------------------------------------------------------------------

    def prepare_model(self, model: nn.Module, *, seed: int, precision: str = "fp32") -> nn.Module:
        """Wrap ``model`` (LoRA injected, base frozen) for this run; returns the model to train.

        FSDP2 shards every decoder layer and the rest (embeddings, final norm, head) in place;
        DDP wraps a loss module that holds the model, tracking the LoRA parameters only (the
        frozen base is the same on every rank by construction) and broadcasting their rank-0
        values once. Ranks other than 0 then reseed, so their LoRA dropout masks differ.
        """
        if not self.active:
            return model
        if self.fsdp and precision == "fp16":
            # GradScaler's inf check would see only this rank's gradient shards, and ranks could disagree on skipping.
            raise TrainingError(
                "--fsdp with fp16: the grad scaler does not work on sharded gradients; "
                "use --precision bf16 or fp32, or drop --fsdp"
            )
        if self.fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)  # embeddings, final norm, lm_head (tied or not) in one group
            # The loop calls model.hidden_states and model.lm_head, not forward: gather around them.
            register_fsdp_forward_method(model, "hidden_states")
        else:
            from torch.nn.parallel import DistributedDataParallel

            loss_module = _MicroBatchLoss(model)
            ignored = [name for name, p in loss_module.named_parameters() if not p.requires_grad]
            ignored += [name for name, _ in loss_module.named_buffers()]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(loss_module, ignored)
            self._ddp = DistributedDataParallel(
                loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False,
            )
        if self.rank:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank)
        return model

    def _micro_batch_loss(self, model: nn.Module, batch: dict, chunk: int) -> torch.Tensor:
        if self._ddp is not None:
            return self._ddp(batch, chunk)
        from philora.training.loop import micro_batch_loss

        return micro_batch_loss(model, batch, chunk)

    @contextlib.contextmanager
    def _gradient_sync(self, model: nn.Module, enabled: bool):
        """Reduce gradients over ranks only on the window's last micro-batch (accumulate locally before)."""
        if self._ddp is not None and not enabled:
            with self._ddp.no_sync():
                yield
        elif self.fsdp:
            model.set_requires_gradient_sync(enabled)
            yield
        else:
            yield

    def accumulate_window(
        self, model: nn.Module, micro_batches: list[dict], *, precision, scaler=None, chunk: int = 256
    ) -> tuple[float, int]:
        """``training.loop.accumulate_window`` over all ranks: (mean token loss, target tokens), both global.

        The denominator is the target-token count of every rank's window together; DDP/FSDP
        average the gradients over the ranks, so each loss is also multiplied by the world size.
        """
        from philora.training.loss import count_targets

        counts = self._tensor(
            [
                sum(count_targets(b["targets"]) for b in micro_batches),
                sum(int(b["attention_mask"].sum()) for b in micro_batches),
            ],
            dtype=torch.int64,
        )
        torch.distributed.all_reduce(counts)
        window_tokens, self.window_input_tokens = (int(v) for v in counts.tolist())
        denominator = max(window_tokens, 1) / self.world_size
        total = torch.zeros((), dtype=torch.float32, device=precision.device)
        for index, batch in enumerate(micro_batches):
            with self._gradient_sync(model, index == len(micro_batches) - 1):
                with precision.autocast():
                    loss = self._micro_batch_loss(model, batch, chunk) / denominator
                (scaler.scale(loss) if scaler is not None else loss).backward()
            total += loss.detach()
        total /= self.world_size
        torch.distributed.all_reduce(total)
        return total.item(), window_tokens

    def evaluate(
        self, model: nn.Module, batches: list[dict], *, precision, chunk: int = 256, max_batches: int | None = None
    ) -> dict:
        """``training.loop.evaluate`` over every rank's validation shard: the token-weighted mean of all.

        ``batches`` is this rank's shard (global batches rank, rank + world_size, ...);
        ``max_batches`` counts global batches. Under FSDP every forward is collective, so ranks
        with fewer batches run discarded forwards until all have run as many.
        """
        from philora.training.loop import evaluate, to_device

        if not self.active:
            return evaluate(model, batches, precision=precision, chunk=chunk, max_batches=max_batches)
        if max_batches:  # the first max_batches global batches: those with global index < max_batches
            batches = batches[: max(0, math.ceil((max_batches - self.rank) / self.world_size))]
        fillers = 0
        if self.fsdp:  # agree on the most batches first: no other collective may come between the forwards
            most = self._tensor([len(batches)])
            torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
            fillers = int(most.item()) - len(batches)
        result = evaluate(model, batches, precision=precision, chunk=chunk) if batches else {"loss": 0.0, "tokens": 0}
        if fillers:
            evaluate(model, [to_device(_filler_batch(), precision.device)] * fillers, precision=precision, chunk=chunk)
        sums = self._tensor([result["loss"] * result["tokens"], result["tokens"]])
        torch.distributed.all_reduce(sums)
        total, tokens = float(sums[0]), int(sums[1])
        loss = total / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": tokens}

    # ---- checkpoints and adapters ---------------------------------------------------------

    @contextlib.contextmanager
    def gathered_lora(self, model: nn.Module, *, write_back: bool = False):
        """Inside: the LoRA parameters are whole tensors on every rank; yields whether this rank writes.

        Under FSDP each sharded LoRA parameter is swapped for its gathered copy, so any writer
        (``lora_core.save_adapter``, a PEFT export) sees what a single process would; with
        ``write_back`` what was loaded into the copies goes back into the shards. Elsewhere the
        parameters are whole already and nothing is swapped.
        """
        if not (self.active and self.fsdp):
            yield self.is_main
            return
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor, distribute_tensor

        # Reshard on every rank first: state_dict() reshards a module left gathered by a no-grad forward,
        # and doing that on rank 0 alone would make only rank 0 gather it again in the next forward.
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        swapped = []
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if "lora_" in name and isinstance(param, DTensor):
                    whole = nn.Parameter(param.detach().full_tensor(), requires_grad=param.requires_grad)
                    module._parameters[name] = whole
                    swapped.append((module, name, param, whole))
        try:
            yield self.is_main
        finally:
            with torch.no_grad():
                for module, name, sharded, whole in swapped:
                    module._parameters[name] = sharded
                    if write_back:
                        local = distribute_tensor(
                            whole.detach().to(sharded.dtype),
                            sharded.device_mesh,
                            sharded.placements,
                            src_data_rank=None,
                        )
                        sharded.to_local().copy_(local.to_local())

    def load_adapter(self, model: nn.Module, path) -> None:
        """``lora_core.load_adapter(strict=True)``, into the shards under FSDP."""
        import lora_core

        with self.gathered_lora(model, write_back=True):
            lora_core.load_adapter(model, path, strict=True)

    def _whole_optimizer_state(self, optimizer) -> dict:
        """The optimizer's state dict with every sharded tensor gathered (the single-process layout)."""
        from torch.distributed.tensor import DTensor

        state = optimizer.state_dict()  # its per-parameter dicts are the optimizer's own: build new ones
        whole = {}
        for index in sorted(state["state"]):  # the same order on every rank: the gathers are collective
            entry = state["state"][index]
            whole[index] = {
                key: entry[key].full_tensor().cpu() if isinstance(entry[key], DTensor) else entry[key]
                for key in sorted(entry)
            }
        return dict(state, state=whole)

    def optimizer_state_to_load(self, saved: dict, optimizer) -> dict:
        """A checkpoint's (whole) optimizer state, cut into this rank's shards under FSDP."""
        if not (self.active and self.fsdp):
            return saved
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = dict(saved, state={})
        for index, entry in saved["state"].items():
            param = params[index]
            state["state"][index] = {
                key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
                if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape
                else value
                for key, value in entry.items()
            }
        return state

    def save_checkpoint(
        self, output_dir, *, model, optimizer, schedule, scaler, state, rng, adapter_config, keep_last, run_config=None
    ) -> str:
        """``training.checkpoint.save_checkpoint`` for all ranks: rank 0 writes, every rank waits for it.

        The checkpoint is the single-process one plus, in ``state.extra["distributed"]``, the
        world size and every rank's RNG states (each rank restores its own on --resume).
        """
        from philora.training.checkpoint import save_checkpoint

        rngs: list = [None] * self.world_size
        torch.distributed.all_gather_object(rngs, rng)
        state.extra["distributed"] = {"world_size": self.world_size, "rank_rng": rngs}
        whole_optimizer = self._whole_optimizer_state(optimizer) if self.fsdp else None
        path = [None]
        with self.gathered_lora(model) as writes:
            if writes:
                snapshot = (
                    optimizer if whole_optimizer is None else types.SimpleNamespace(state_dict=lambda: whole_optimizer)
                )
                path = [
                    str(
                        save_checkpoint(
                            output_dir,
                            model=model,
                            optimizer=snapshot,
                            schedule=schedule,
                            scaler=scaler,
                            state=state,
                            rng=rng,
                            adapter_config=adapter_config,
                            keep_last=keep_last,
                            run_config=run_config,
                        )
                    )
                ]
        torch.distributed.broadcast_object_list(path, src=0)  # also the barrier: nobody goes on before it is complete
        return path[0]

    # ---- resuming -------------------------------------------------------------------------

    def resume_view(self, payload: dict, current: dict) -> tuple[dict | None, dict]:
        """(stored, current) run options to compare on --resume, with the world size taken into account.

        The global batch (--batch-size x --grad-accum x ranks) must stay, not --grad-accum itself;
        a different number of ranks also needs the data position to split evenly over them.
        """
        stored = payload.get("run_config")
        saved_world = int((payload.get("extra") or {}).get("distributed", {}).get("world_size", 1))
        if stored is None or saved_world == self.world_size:
            return stored, current
        old_accum, new_accum = stored.get("grad_accum"), current.get("grad_accum")
        if old_accum is not None and old_accum * saved_world != new_accum * self.world_size:
            needed = old_accum * saved_world / self.world_size
            hint = (
                f"pass --grad-accum {int(needed)}"
                if needed.is_integer()
                else f"use a number of processes that divides {old_accum * saved_world}"
            )
            raise TrainingError(
                f"--resume: the checkpoint was trained on {saved_world} process(es) x --grad-accum {old_accum} "
                f"micro-batches per step; {self.world_size} process(es) x --grad-accum {new_accum} changes the global "
                f"batch (and so the run); {hint} to keep it"
            )
        global_index = payload["batch_index"] * saved_world
        if global_index % self.world_size:
            raise TrainingError(
                f"--resume: the checkpoint stopped after {global_index} batches of epoch "
                f"{payload['epoch']}, which do not "
                f"split evenly over {self.world_size} processes; resume on {saved_world} process(es)"
            )
        return {k: v for k, v in stored.items() if k != "grad_accum"}, {
            k: v for k, v in current.items() if k != "grad_accum"
        }

    def resume_rank(self, payload: dict, state, *, seed: int):
        """This rank's RNG states and data position from a checkpoint (``state`` from state_from_payload).

        Returns the RNG snapshot to restore, or None for a rank the checkpoint has none for
        (more ranks than it was trained on): that rank starts a fresh stream.
        """
        saved = (payload.get("extra") or {}).get("distributed", {})
        saved_world = int(saved.get("world_size", 1))
        state.batch_index = state.batch_index * saved_world // self.world_size  # checked by resume_view
        rngs = saved.get("rank_rng") or [payload["rng"]]
        if self.rank < len(rngs):
            return rngs[self.rank]
        torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank + state.step)
        return None

    # ---- what only rank 0 shows ------------------------------------------------------------

    def metrics_log(self, output_dir, *, resume_step: int | None):
        """metrics.jsonl (and TensorBoard) on rank 0; a sink that keeps nothing elsewhere."""
        from philora.training.progress import MetricsLog

        return MetricsLog(output_dir, resume_step=resume_step) if self.is_main else _NoMetrics()

    def progress_bar(self, total_steps: int, *, start_step: int):
        """The progress line on rank 0; one that shows nothing elsewhere."""
        from philora.training.progress import ProgressBar

        stream = None if self.is_main else open(os.devnull, "w")
        return ProgressBar(total_steps, start_step=start_step, stream=stream)


class _MicroBatchLoss(nn.Module):
    """The model's summed loss of one micro-batch as a forward, so DDP sees (and syncs) it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, chunk: int) -> torch.Tensor:
        from philora.training.loop import micro_batch_loss

        return micro_batch_loss(self.model, batch, chunk)


class _NoMetrics:
    """MetricsLog's interface, keeping nothing (ranks other than 0)."""

    def write(self, record: dict) -> None:
        """Drop ``record``."""

    def close(self) -> None:
        """Nothing to close."""


def _filler_batch() -> dict:
    """One padding-only row with no targets: a forward that FSDP ranks can run to keep step."""
    zeros = torch.zeros((1, 1), dtype=torch.long)
    return {
        "input_ids": zeros,
        "targets": torch.full((1, 1), -100, dtype=torch.long),
        "attention_mask": torch.ones((1, 1), dtype=torch.long),
        "position_ids": zeros,
        "document_ids": zeros + 1,
    }


def _collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed or timed-out collective (a rank died, hangs or cannot be reached)."""
    if isinstance(err, torch.distributed.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        word in text
        for word in (
            "Connection closed by peer",
            "Connection reset",
            "Timed out",
            "timed out",
            "Gloo",
            "NCCL",
            "ProcessGroup",
            "Broken pipe",
        )
    )


def _first_sentence(err: BaseException) -> str:
    """The gist of a backend error: its first sentence, without the C++ source location in front."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^(\[[^\]]*\]\s*)+", "", text)  # "[/.../gloo/transport/tcp/pair.cc:553] Connection closed ..."
    return text.split(". ")[0][:160]


@contextlib.contextmanager
def open_distributed(cfg):
    """The run's :class:`Distributed`: the process group from torchrun's environment, or a single process.

    Under torchrun: gloo on CPU, nccl on CUDA (device ``cuda:LOCAL_RANK``), collectives time out
    after ``--dist-timeout`` seconds; ranks other than 0 print nothing on stdout. A failed or
    timed-out collective, or any error of a rank other than 0, becomes a one-line TrainingError
    naming the rank. The process group is destroyed on the way out.
    """
    from philora.training.precision import resolve_device

    if cfg.dist_timeout <= 0:
        raise TrainingError(f"--dist-timeout must be > 0 seconds, got {cfg.dist_timeout}")
    world_size = int(os.environ.get(ENV_WORLD_SIZE, "1") or 1)
    if world_size <= 1:
        if cfg.fsdp:
            raise TrainingError(
                "--fsdp shards the model over the processes of a torchrun launch; run it under "
                "torchrun with 2 or more processes (torchrun --nproc_per_node 2 train.py ... --fsdp), "
                "or drop --fsdp"
            )
        yield Distributed()
        return
    if cfg.fsdp and cfg.quantize != "none":
        raise TrainingError(
            f"--fsdp with --quantize {cfg.quantize}: FSDP2 cannot shard bitsandbytes 4-bit weights (their "
            f"quantization state lives outside the tensor it splits); drop --fsdp (data parallel "
            f"QLoRA: every process holds the whole 4-bit base) or drop --quantize"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"rank {rank}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA "
                f"device(s) on this node; start at most that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist = Distributed(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        fsdp=cfg.fsdp,
        device=device,
    )
    torch.distributed.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        timeout=datetime.timedelta(seconds=cfg.dist_timeout),
        device_id=device if device.type == "cuda" else None,
    )
    quiet = open(os.devnull, "w") if rank else None
    stdout = sys.stdout
    if quiet is not None:
        sys.stdout = quiet
    try:
        yield dist
    except Exception as err:
        from lora_core import LoRAError
        from phi_models import HubError, PhiModelError
        from philora.data import DataError

        if _collective_failure(err):
            first = _first_sentence(err)
            raise TrainingError(
                f"rank {rank}: lost the other training processes (one died, or did not answer within --dist-timeout "
                f"{cfg.dist_timeout:g} s): {first}; checkpoints already written are complete, continue with "
                f"--resume latest"
            ) from None
        if rank and isinstance(err, (TrainingError, LoRAError, PhiModelError, HubError, DataError)):
            raise TrainingError(f"rank {rank}: {err}") from None
        raise
    finally:
        sys.stdout = stdout
        if quiet is not None:
            quiet.close()
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group()
