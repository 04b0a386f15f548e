"""mark_only_lora_as_trainable / lora_state_dict against loralib, and the trainable report."""

import loralib
import pytest
import torch.nn as nn

import lora_core as lora


def _build(module):
    return nn.Sequential(
        module.Linear(4, 4, r=2, bias=True), nn.Linear(4, 4), nn.LayerNorm(4), module.Embedding(10, 4, r=2)
    )


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_trainable_sets_and_state_dicts_match_loralib(bias):
    ref, ours = _build(loralib), _build(lora)
    loralib.mark_only_lora_as_trainable(ref, bias=bias)
    lora.mark_only_lora_as_trainable(ours, bias=bias)
    trainable = lambda m: [n for n, p in m.named_parameters() if p.requires_grad]  # noqa: E731
    assert trainable(ours) == trainable(ref)
    assert list(lora.lora_state_dict(ours, bias=bias)) == list(loralib.lora_state_dict(ref, bias=bias))


def test_print_trainable_parameters(capsys):
    model = _build(lora)
    lora.mark_only_lora_as_trainable(model)
    trainable, total = lora.trainable_parameters(model)
    assert trainable == 2 * 4 + 4 * 2 + 2 * 10 + 4 * 2
    assert total == trainable + (16 + 4) + (16 + 4) + 8 + 40
    lora.print_trainable_parameters(model)
    printed = capsys.readouterr().out.strip()
    assert (
        printed == f"trainable params: {trainable} || all params: {total} || trainable%: {100 * trainable / total:.4f}"
    )


def test_shared_parameters_are_counted_once():
    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    assert lora.trainable_parameters(nn.ModuleList([embedding, head])) == (40, 40)
