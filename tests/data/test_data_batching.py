"""Packing keeps documents apart, batches are deterministic, and ranks cover every example once."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from philora.data import prepare
from philora.data.batching import make_batches, pack_rows
from philora.data.errors import DataError
from philora.data.tokenize import IGNORE_INDEX, Example


def _examples(lengths, start=10):
    # Distinct ids per example so every token can be traced back to its example.
    out = []
    for n, length in enumerate(lengths):
        ids = [start + n] * length
        out.append(Example(input_ids=ids, targets=[IGNORE_INDEX] + ids[1:]))
    return out


def _row_documents(batch):
    """[(row, doc id, input ids)] for every packed document in a batch."""
    docs = []
    for b in range(batch["input_ids"].shape[0]):
        ids, doc = batch["input_ids"][b], batch["document_ids"][b]
        for d in doc.unique().tolist():
            if d:
                docs.append((b, d, ids[doc == d].tolist()))
    return docs


def test_pack_rows_best_fit_never_overflows():
    lengths = [7, 3, 5, 2, 8, 1, 4, 6]
    rows = pack_rows(lengths, list(range(len(lengths))), 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # 36 tokens in rows of 10: best fit reaches the minimum


def test_packed_batch_layout():
    examples = _examples([3, 4, 2, 6])
    (batch,) = make_batches(examples, batch_size=8, max_seq_len=8, pad_id=0, shuffle=False)
    assert set(batch) == {"input_ids", "targets", "attention_mask", "position_ids", "document_ids"}
    assert all(t.dtype == torch.long and t.shape == batch["input_ids"].shape for t in batch.values())
    for b, d, ids in _row_documents(batch):
        where = batch["document_ids"][b] == d
        n = len(ids)
        assert batch["position_ids"][b][where].tolist() == list(range(n))  # restart at 0 per document
        assert ids == examples[ids[0] - 10].input_ids
        # The first target of each document is -100: nothing predicts across a boundary.
        assert batch["targets"][b][where].tolist()[0] == IGNORE_INDEX
    pad = batch["document_ids"] == 0
    assert (batch["attention_mask"][pad] == 0).all() and (batch["targets"][pad] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][~pad] == 1).all()


def test_batches_are_deterministic_in_seed_and_epoch():
    examples = _examples([1 + (i * 7) % 13 for i in range(60)])
    make = lambda **kw: make_batches(examples, batch_size=3, max_seq_len=16, pad_id=0, **kw)  # noqa: E731
    a, b = make(seed=1, epoch=2), make(seed=1, epoch=2)
    assert len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    c = make(seed=1, epoch=3)
    assert any(not torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c)) or len(a) != len(c)


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_get_equal_batch_counts_and_every_kept_example_exactly_once(packing, world_size):
    examples = _examples([1 + (i * 5) % 11 for i in range(49)])  # 7 packed / 13 plain batches
    seen = Counter()
    counts, dropped = [], set()
    for rank in range(world_size):
        batches = make_batches(
            examples,
            batch_size=4,
            max_seq_len=12,
            pad_id=0,
            packing=packing,
            seed=3,
            epoch=1,
            rank=rank,
            world_size=world_size,
        )
        counts.append(len(batches))
        dropped.add((batches.dropped_batches, batches.dropped_examples))
        for batch in batches:
            seen.update(ids[0] for _, _, ids in _row_documents(batch))
    ((n_dropped_batches, n_dropped_examples),) = dropped  # every rank reports the same
    total = len(make_batches(examples, batch_size=4, max_seq_len=12, pad_id=0, packing=packing, seed=3, epoch=1))
    assert len(set(counts)) == 1  # equal counts: no rank waits at the epoch's end for a step the others skip
    assert n_dropped_batches == total % world_size and sum(counts) == total - n_dropped_batches
    assert set(seen.values()) == {1} and len(seen) == len(examples) - n_dropped_examples
    assert set(seen) <= {10 + i for i in range(len(examples))}
    if world_size == 1:
        assert n_dropped_examples == 0
    else:
        assert n_dropped_batches == 1 and n_dropped_examples > 0  # the case that used to give counts n and n + 1


def test_uneven_tail_is_kept_on_request_and_differs_by_epoch():
    examples = _examples([1 + (i * 5) % 11 for i in range(49)])  # 7 packed batches over 3 ranks
    options = dict(batch_size=4, max_seq_len=12, pad_id=0, world_size=3, seed=3)
    kept = [make_batches(examples, rank=r, drop_uneven=False, **options) for r in range(3)]
    seen = Counter(ids[0] for batches in kept for batch in batches for _, _, ids in _row_documents(batch))
    assert seen == Counter({10 + i: 1 for i in range(len(examples))})
    assert max(map(len, kept)) - min(map(len, kept)) == 1 and all(b.dropped_batches == 0 for b in kept)

    def left_out(epoch):
        got = {
            ids[0]
            for r in range(3)
            for batch in make_batches(examples, rank=r, epoch=epoch, **options)
            for _, _, ids in _row_documents(batch)
        }
        return {10 + i for i in range(len(examples))} - got

    assert left_out(0) != left_out(1)  # shuffled: a different tail is left out each epoch


def test_too_few_batches_for_the_ranks_is_an_error():
    with pytest.raises(DataError, match="fewer than world_size=4"):
        make_batches(_examples([3, 3, 3]), batch_size=1, max_seq_len=4, pad_id=0, packing=False, world_size=4)
    assert make_batches([], batch_size=1, max_seq_len=4, pad_id=0, world_size=4) == []


def test_length_grouping_pads_little():
    examples = _examples([2, 30, 3, 31, 2, 29, 3, 30])
    batches = make_batches(examples, batch_size=2, max_seq_len=32, pad_id=0, packing=False, seed=0)
    widths = sorted(b["input_ids"].shape[1] for b in batches)
    assert widths == [2, 3, 30, 31]  # sorted pairs: (31, 30) (30, 29) (3, 3) (2, 2)
    assert all((b["document_ids"] <= 1).all() for b in batches)


def test_bad_batching_arguments():
    with pytest.raises(DataError, match="more than max_seq_len=4"):
        make_batches(_examples([5]), batch_size=1, max_seq_len=4, pad_id=0)
    with pytest.raises(DataError, match="rank 2 is not within world_size 2"):
        make_batches(_examples([3]), batch_size=1, max_seq_len=4, pad_id=0, rank=2, world_size=2)


def test_packed_batch_matches_examples_one_by_one_on_tiny_model(tiny_tok):
    phi_models = pytest.importorskip("phi_models")
    torch.manual_seed(0)
    model = phi_models.from_pretrained("tiny", dtype=torch.float32).eval()
    examples = prepare("samples/messages", tiny_tok, max_seq_len=96, val_fraction=0.0).train[:9]
    batches = make_batches(examples, batch_size=2, max_seq_len=96, pad_id=tiny_tok.pad_token_id, seed=5)
    assert any(batch["document_ids"].max() > 1 for batch in batches)  # really packed
    by_ids = {tuple(e.input_ids): e for e in examples}
    checked, packed_loss, single_loss = 0, 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            logits = model(
                batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                document_ids=batch["document_ids"],
            )
            packed_loss += F.cross_entropy(
                logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            for b, d, ids in _row_documents(batch):
                example = by_ids[tuple(ids)]
                alone = model(torch.tensor([example.input_ids]))[0]
                where = batch["document_ids"][b] == d
                torch.testing.assert_close(logits[b][where], alone, atol=1e-5, rtol=1e-5)
                single_loss += F.cross_entropy(
                    alone, torch.tensor(example.targets), ignore_index=IGNORE_INDEX, reduction="sum"
                ).item()
                checked += 1
    assert checked == len(examples)
    assert packed_loss == pytest.approx(single_loss, rel=1e-5)
