"""The loop's numerical core on a toy model: token-normalized accumulation, clipping, evaluation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from philora.training.errors import TrainingError
from philora.training.loop import accumulate_window, evaluate, optimizer_step
from philora.training.precision import Precision, resolve_precision

V, D = 40, 12


class ToyLM(nn.Module):
    """Per-token model with the philora call contract (hidden_states + lm_head); only `adapter` trains."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(V, D)
        self.adapter = nn.Linear(D, D)
        self.lm_head = nn.Linear(D, V)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.embed.requires_grad_(False)
        self.lm_head.requires_grad_(False)

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, document_ids=None):
        x = self.embed(input_ids)
        return x + torch.tanh(self.adapter(x))


def _batch(rows):
    """Right-padded batch from lists of (input, target) pairs."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    tgt = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        for t, (a, b) in enumerate(row):
            ids[i, t], tgt[i, t], mask[i, t] = a, b, 1
    return {"input_ids": ids, "targets": tgt, "attention_mask": mask}


def _rows(seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length in (3, 7, 5, 2):  # unequal target counts: a mean of means would differ
        ids = torch.randint(0, V, (length,), generator=g).tolist()
        tgt = torch.randint(0, V, (length,), generator=g).tolist()
        tgt[0] = -100
        rows.append(list(zip(ids, tgt)))
    return rows


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


CPU32 = Precision("fp32", torch.device("cpu"))


def test_accumulation_over_4_equals_one_batch_of_4():
    rows = _rows()
    big = ToyLM()
    loss_big, n_big = accumulate_window(big, [_batch(rows)], precision=CPU32, chunk=3)
    small = ToyLM()
    loss_small, n_small = accumulate_window(small, [_batch([r]) for r in rows], precision=CPU32, chunk=3)
    assert n_big == n_small == sum(len(r) - 1 for r in rows)
    assert loss_small == pytest.approx(loss_big, rel=1e-6)
    for a, b in zip(_grads(small), _grads(big)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # one optimizer step from each gives the same weights
    for model in (big, small):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        optimizer_step([p for p in model.parameters() if p.requires_grad], opt, None, 0.0)
    for a, b in zip(small.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_window_loss_is_token_weighted_mean_of_full_ce():
    rows = _rows(3)
    model = ToyLM()
    batch = _batch(rows)
    with torch.no_grad():
        logits = model.lm_head(model.hidden_states(batch["input_ids"]))
        ref = F.cross_entropy(logits.reshape(-1, V), batch["targets"].reshape(-1), ignore_index=-100).item()
    loss, _ = accumulate_window(model, [_batch([r]) for r in rows], precision=CPU32)
    assert loss == pytest.approx(ref, rel=1e-6)
    result = evaluate(model, [_batch(rows[:2]), _batch(rows[2:])], precision=CPU32)
    assert result["loss"] == pytest.approx(ref, rel=1e-6) and result["ppl"] == pytest.approx(math.exp(ref), rel=1e-6)


def test_grad_norm_is_reported_before_clipping():
    model = ToyLM()
    accumulate_window(model, [_batch(_rows())], precision=CPU32)
    params = [p for p in model.parameters() if p.requires_grad]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
    opt = torch.optim.SGD(params, lr=0.0)
    captured = {}
    orig_step = opt.step

    def spy():
        captured["norm"] = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
        ).item()
        orig_step()

    opt.step = spy
    norm = optimizer_step(params, opt, None, max_grad_norm=expected / 10)
    assert norm == pytest.approx(expected, rel=1e-5)
    assert captured["norm"] == pytest.approx(expected / 10, rel=1e-4)
    assert all(p.grad is None for p in params)


def test_bf16_autocast_window_close_to_fp32():
    rows = _rows()
    loss32, _ = accumulate_window(ToyLM(), [_batch(rows)], precision=CPU32)
    loss16, _ = accumulate_window(ToyLM(), [_batch(rows)], precision=Precision("bf16", torch.device("cpu")))
    assert loss16 == pytest.approx(loss32, rel=3e-2)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(TrainingError, match="--precision fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def _on(device, batch):
    return {key: value.to(device) for key, value in batch.items()}


@pytest.mark.gpu
def test_fp16_grad_scaler_on_cuda_steps_and_skips_overflow():
    cuda = torch.device("cuda")
    rows = _rows()
    loss32, _ = accumulate_window(ToyLM().to(cuda), [_on(cuda, _batch(rows))], precision=Precision("fp32", cuda))
    precision = Precision("fp16", cuda)
    scaler = precision.make_scaler()
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    model = ToyLM().to(cuda)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss16, _ = accumulate_window(model, [_on(cuda, _batch(rows))], precision=precision, scaler=scaler)
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    before = [p.detach().clone() for p in params]
    scale = scaler.get_scale()
    assert math.isfinite(optimizer_step(params, opt, scaler, 1.0))
    assert all(not torch.equal(a, p) for a, p in zip(before, params))  # finite grads: the step is taken
    assert scaler.get_scale() == scale
    # An overflowing gradient: the scaler skips the step and halves its scale.
    accumulate_window(model, [_on(cuda, _batch(rows))], precision=precision, scaler=scaler)
    params[0].grad.fill_(float("inf"))
    before = [p.detach().clone() for p in params]
    optimizer_step(params, opt, scaler, 1.0)
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    assert scaler.get_scale() == scale / 2


@pytest.mark.gpu
def test_bf16_autocast_on_cuda_runs_bf16_matmuls_close_to_fp32():
    cuda = torch.device("cuda")
    rows = _rows()
    precision = Precision("bf16", cuda)
    assert precision.make_scaler() is None
    model = ToyLM().to(cuda)
    with precision.autocast():
        assert model.adapter(torch.randn(2, D, device=cuda)).dtype == torch.bfloat16
    loss32, _ = accumulate_window(ToyLM().to(cuda), [_on(cuda, _batch(rows))], precision=Precision("fp32", cuda))
    loss16, _ = accumulate_window(model, [_on(cuda, _batch(rows))], precision=precision)
    assert loss16 == pytest.approx(loss32, rel=3e-2)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
