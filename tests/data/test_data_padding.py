"""Padding batches to a length multiple (make_batches(pad_to_multiple=...)) changes shapes only, never the loss."""

import torch

import lora_core
import phi_models
from philora import data
from philora.training.loop import accumulate_window, evaluate
from philora.training.precision import Precision

CPU32 = Precision("fp32", torch.device("cpu"))


def test_collate_pads_to_a_multiple_with_inert_positions():
    rows = [[data.Example([5, 6, 7], [6, 7, 0])], [data.Example([8, 9, 10, 11, 12], [9, 10, 11, 12, 0])]]
    out = data.collate(rows, pad_id=7, pad_to_multiple=8)
    assert all(v.shape == (2, 8) for v in out.values())
    assert out["input_ids"][0, 3:].tolist() == [7] * 5 and out["targets"][1, 5:].tolist() == [-100] * 3
    assert out["attention_mask"][:, 5:].sum() == 0 and out["document_ids"][:, 5:].sum() == 0
    assert data.collate(rows, pad_id=7)["input_ids"].shape == (2, 5)


def test_padding_does_not_change_loss_or_grads_on_tiny():
    tok = phi_models.load_tokenizer("tiny")
    prepared = data.prepare("samples/roleplay", tok, max_seq_len=100, limit=6, seed=0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    options = dict(batch_size=3, max_seq_len=100, pad_id=pad, shuffle=False)
    (batch,) = data.make_batches(prepared.train[:3], **options)
    (padded,) = data.make_batches(prepared.train[:3], pad_to_multiple=64, **options)
    assert padded["input_ids"].shape[1] % 64 == 0 and padded["input_ids"].shape[1] > batch["input_ids"].shape[1]
    results = []
    for b in (batch, padded):
        torch.manual_seed(0)
        model = phi_models.from_pretrained("tiny")
        lora_core.inject(model, targets=["q_proj", "fc2"], r=4, lora_alpha=8)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
        loss, n = accumulate_window(model, [b], precision=CPU32)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        results.append((loss, n, grads, evaluate(model, [b], precision=CPU32)["loss"]))
    (l0, n0, g0, e0), (l1, n1, g1, e1) = results
    assert n0 == n1 and abs(l0 - l1) <= 1e-6 * l0 and abs(e0 - e1) <= 1e-6 * e0
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
