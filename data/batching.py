"""Examples -> batches: packing with document boundaries or length grouping, seeded
shuffling, and sharding across ranks.

A batch is a dict of LongTensors, all (B, T): ``input_ids``, ``targets`` (shifted,
-100 where nothing is learned), ``attention_mask``, ``position_ids`` (restarting at 0
for each packed document) and ``document_ids`` (1, 2, ... per packed document; 0 for
padding). Batches depend only on (examples, options, seed, epoch), so a run resumes at
(epoch, batch index). Every rank gets the same number of batches (see ``make_batches``).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

import torch

from philora.data.arguments import require_examples, require_int
from philora.data.errors import DataError
from philora.data.tokenize import IGNORE_INDEX, Example

# Length grouping sorts within windows of this many batches, so batches stay random
# across the epoch while each one holds examples of similar length.
GROUP_WINDOW_BATCHES = 64


def _rng(seed: int, epoch: int) -> random.Random:
    # One independent, reproducible stream per (seed, epoch).
    return random.Random(f"philora-data:{seed}:{epoch}")


def pack_rows(lengths: Sequence[int], order: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit packing: put each example (in ``order``) into the open row with the least
    room that still fits it. Returns rows as lists of example indices, in creation order."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, row index)
    for index in order:
        length = lengths[index]
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            room, row = free.pop(slot)
            rows[row].append(index)
            room -= length
        else:
            row, room = len(rows), capacity - length
            rows.append([index])
        if room > 0:
            bisect.insort(free, (room, row))
    return rows


def _group_by_length(lengths: Sequence[int], order: list[int], batch_size: int) -> list[list[int]]:
    window = batch_size * GROUP_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def collate(rows: list[list[Example]], pad_id: int, pad_to_multiple: int = 1) -> dict[str, torch.Tensor]:
    """Lay out rows of examples (one or more per row) as a right-padded batch.

    The width is rounded up to ``pad_to_multiple``: CPU bf16 attention keeps per-shape state, so
    a run over ever-changing lengths grows its memory with every new length (docs/performance.md),
    and GPUs prefer such lengths too.
    Padding positions are inert by the batch contract (attention 0, document 0, target -100).
    """
    width = max(sum(len(e) for e in row) for row in rows)
    width = -(-width // max(pad_to_multiple, 1)) * max(pad_to_multiple, 1)
    input_ids, targets, attention, positions, documents = [], [], [], [], []
    for row in rows:
        ids, tgt, pos, doc = [], [], [], []
        for number, example in enumerate(row, start=1):
            ids += example.input_ids
            tgt += example.targets
            pos += range(len(example))
            doc += [number] * len(example)
        pad = width - len(ids)
        input_ids.append(ids + [pad_id] * pad)
        targets.append(tgt + [IGNORE_INDEX] * pad)
        attention.append([1] * len(ids) + [0] * pad)
        positions.append(pos + [0] * pad)
        documents.append(doc + [0] * pad)
    as_tensor = lambda rows_: torch.tensor(rows_, dtype=torch.long)  # noqa: E731
    return {
        "input_ids": as_tensor(input_ids),
        "targets": as_tensor(targets),
        "attention_mask": as_tensor(attention),
        "position_ids": as_tensor(positions),
        "document_ids": as_tensor(documents),
    }


class EpochBatches(list):
    """One rank's batches for an epoch (a plain list), and what was left out so all ranks get as many."""

    def __init__(self, batches=(), dropped_batches: int = 0, dropped_examples: int = 0):
        super().__init__(batches)
        self.dropped_batches = dropped_batches  # global batches left out, over all ranks
        self.dropped_examples = dropped_examples


def make_batches(
    examples: Sequence[Example],
    *,
    batch_size: int,
    max_seq_len: int,
    pad_id: int,
    packing: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pad_to_multiple: int = 1,
    drop_uneven: bool = True,
) -> EpochBatches:
    """Build this rank's batches for one epoch.

    With ``packing`` several examples share a row of at most ``max_seq_len`` tokens;
    otherwise each row is one example and batches group similar lengths. Rank ``r`` gets
    global batches ``r, r + world_size, ...``. With ``drop_uneven`` (the default) the last
    ``len % world_size`` global batches are left out, so every rank gets the same number of
    batches: DDP hangs at the end of an epoch when one rank takes a step the others do not.
    The ranks together then see every kept example exactly once; what was dropped is counted
    on the result (``dropped_batches``, ``dropped_examples``), and with shuffling it is a
    different tail each epoch. ``drop_uneven=False`` keeps everything (counts then differ by
    up to one), for loops with no per-batch collective such as evaluation.
    """
    require_examples(examples)
    for name, value in (
        ("batch_size", batch_size),
        ("max_seq_len", max_seq_len),
        ("pad_id", pad_id),
        ("pad_to_multiple", pad_to_multiple),
    ):
        require_int(name, value, 0)
    if batch_size < 1 or max_seq_len < 1:
        raise DataError(f"batch_size ({batch_size}) and max_seq_len ({max_seq_len}) must be at least 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not within world_size {world_size}; use 0 <= rank < world_size")
    lengths = [len(e) for e in examples]
    for index, length in enumerate(lengths):
        if length > max_seq_len:
            raise DataError(
                f"example {index} has {length} tokens, more than max_seq_len={max_seq_len}; "
                f"prepare the data with the same max_seq_len"
            )
        if length == 0:
            raise DataError(f"example {index} is empty; prepare the data with data.prepare")
    rng = _rng(seed, epoch)
    order = list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    if packing:
        rows = pack_rows(lengths, order, max_seq_len)
        if shuffle:
            rng.shuffle(rows)  # best-fit fills early rows first; spread them over the epoch
        groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    else:
        groups = [[[i] for i in batch] for batch in _group_by_length(lengths, order, batch_size)]
        if shuffle:
            rng.shuffle(groups)
    dropped: list = []
    if drop_uneven and world_size > 1:
        keep = len(groups) - len(groups) % world_size
        if keep == 0 and groups:
            raise DataError(
                f"{len(examples)} examples make {len(groups)} batches of batch_size={batch_size}, fewer "
                f"than world_size={world_size}, so some rank would get none; use a smaller batch_size, "
                f"more data, or drop_uneven=False"
            )
        groups, dropped = groups[:keep], groups[keep:]
    batches = [
        collate([[examples[i] for i in row] for row in group], pad_id, pad_to_multiple)
        for group in groups[rank::world_size]
    ]
    return EpochBatches(
        batches, dropped_batches=len(dropped), dropped_examples=sum(len(row) for group in dropped for row in group)
    )
