"""LoRA over a bitsandbytes 4-bit base on CPU."""

import warnings

import bitsandbytes as bnb
import pytest
import torch
import torch.nn as nn

import lora_core as lora


def _quantized_model(quant_type="nf4", double_quant=True, compute_dtype=torch.float32, fused=False, device="cpu"):
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 32))
    quantized = nn.Sequential(
        bnb.nn.Linear4bit(64, 48, compute_dtype=compute_dtype, quant_type=quant_type, compress_statistics=double_quant),
        nn.GELU(),
        bnb.nn.Linear4bit(48, 32, compute_dtype=compute_dtype, quant_type=quant_type, compress_statistics=double_quant),
    )
    quantized.load_state_dict(dense.state_dict())
    quantized.to(device)  # quantizes
    if fused:
        quantized[0].lora_slices = {"q_proj": 32, "k_proj": 8, "v_proj": 8}
    return dense, quantized


@pytest.mark.parametrize("quant_type,double_quant", [("nf4", True), ("nf4", False), ("fp4", True)])
def test_forward_backward_train_on_cpu(quant_type, double_quant):
    dense, model = _quantized_model(quant_type, double_quant)
    x, target = torch.randn(8, 64), torch.randn(8, 32)
    base_out = model(x).detach()
    packed = model[0].weight.data.clone()
    assert lora.inject(model, ["0", "2"], r=4, lora_alpha=8) == ["0", "2"]
    assert model[0].lora_A.dtype == torch.float32 and model[0].weight.dtype == torch.uint8
    torch.testing.assert_close(model(x), base_out)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = (model(x) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(model[0].weight.data, packed)  # the quantized weight stays frozen
    assert not model[0].weight.requires_grad


@pytest.mark.gpu
def test_nf4_lora_trains_on_cuda():
    _, model = _quantized_model(compute_dtype=torch.bfloat16, fused=True, device="cuda")
    assert model[0].weight.device.type == "cuda" and model[0].weight.dtype == torch.uint8
    packed = model[2].weight.data.clone()
    assert lora.inject(model, ["q_proj", "v_proj", "2"], r=4, lora_alpha=8) == ["q_proj", "v_proj", "2"]
    assert model[0].lora_A.device.type == "cuda" and model[0].lora_A.dtype == torch.float32
    x, target = torch.randn(8, 64, device="cuda"), torch.randn(8, 32, device="cuda")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = (model(x.bfloat16()).float() - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(model[2].weight.data, packed)  # the quantized weight stays frozen


def test_bf16_compute_and_slices():
    _, model = _quantized_model(compute_dtype=torch.bfloat16, fused=True)
    assert lora.inject(model, ["q_proj", "v_proj"], r=2) == ["q_proj", "v_proj"]
    layer = model[0]
    assert layer.enable_lora == [True, False, True] and layer.lora_B.shape == (40, 2)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    expected = x.float() @ (layer.dequantized_weight().float() + layer.delta_weight()).T + layer.bias.float()
    assert (out.float() - expected).abs().max() <= 0.02 * expected.abs().max()
    out.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32


def test_merge_requantizes_with_warning_and_unmerge_is_exact():
    _, model = _quantized_model()
    lora.inject(model, ["0"], r=4)
    layer = model[0]
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.1)
    x = torch.randn(4, 64)
    expected = layer(x).detach()
    original = layer.weight
    with pytest.warns(UserWarning, match="re-quantizes"):
        lora.merge(model)
    merged_out = layer(x)
    assert not torch.equal(layer.weight.data, original.data)
    error = (merged_out - expected).abs().max()
    assert 0 < error < 0.25 * expected.abs().max()  # 4-bit rounding, not garbage
    lora.unmerge(model)
    assert layer.weight is original and torch.equal(layer(x), expected)


def test_merge_and_unload_gives_exact_dense_copy():
    _, model = _quantized_model()
    lora.inject(model, ["0", "2"], r=4)
    with torch.no_grad():
        model[0].lora_B.normal_(0, 0.1)
    x = torch.randn(4, 64)
    expected = model(x).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no re-quantization, no rounding warning
        lora.merge_and_unload(model)
    assert type(model[0]) is nn.Linear and model[0].weight.dtype == torch.float32
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_parameter_report_counts_packed_weights():
    _, model = _quantized_model()
    lora.inject(model, ["0", "2"], r=4)
    trainable, total = lora.trainable_parameters(model)
    assert trainable == 4 * (64 + 48) + 4 * (48 + 32)
    assert total == trainable + 64 * 48 + 48 + 48 * 32 + 32
    line = lora.print_trainable_parameters(model)
    assert line.startswith(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: ")


def test_adapted_4bit_model_pickles():
    import io

    _, model = _quantized_model(fused=True)
    lora.inject(model, ["q_proj", "2"], r=2)
    with torch.no_grad():
        model[2].lora_B.normal_()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert type(again[0]).__name__ == "LoRAMergedLinear4bit" and type(again[2]).__name__ == "LoRALinear4bit"
    x = torch.randn(2, 64)
    assert torch.equal(again(x), model(x))


def _avx512bf16():
    from bitsandbytes.functional import has_avx512bf16

    return has_avx512bf16()


@pytest.mark.skipif(not _avx512bf16(), reason="bitsandbytes repacks 4-bit weights only on AVX512-BF16 CPUs")
def test_eval_inference_packing_never_breaks_training_or_merging():
    torch.manual_seed(0)
    model = nn.Sequential(
        bnb.nn.Linear4bit(64, 128, compute_dtype=torch.bfloat16, quant_type="nf4"),
        nn.GELU(),
        bnb.nn.Linear4bit(128, 64, compute_dtype=torch.bfloat16, quant_type="nf4"),
    )
    model.to("cpu")
    reference = dequantize(model[0])
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():
        model(x)  # bitsandbytes repacks both weights for its inference-only CPU kernel
    assert model[0].weight.quant_state.packing_format_for_cpu
    lora.inject(model, ["0", "2"], r=4)
    # bitsandbytes' inverse of its packing keeps the 4-bit codes but re-derives the block scales
    # through bf16, so a weight packed before inject comes back within bf16 rounding.
    restored = model[0].dequantized_weight().clone()
    torch.testing.assert_close(restored, reference, atol=0, rtol=2**-7)
    model.train()
    model(x).float().sum().backward()  # fails on the packed layout unless lora_core restores it
    assert model[2].lora_B.grad is not None
    model.eval()
    with torch.no_grad():
        model(x)  # adapted layers are no longer repacked
    assert not model[2].weight.quant_state.packing_format_for_cpu
    assert torch.equal(model[0].dequantized_weight(), restored)  # nothing changes after adaptation


def dequantize(layer):
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(layer.weight.data, layer.weight.quant_state).clone()


def test_adapted_4bit_model_deepcopies_and_merges_alone():
    import copy

    _, model = _quantized_model(fused=True)
    lora.inject(model, ["q_proj", "2"], r=2)
    with torch.no_grad():
        model[0].lora_B.normal_()
    twin = copy.deepcopy(model)
    assert type(twin[0]) is type(model[0]) and twin[0].weight is not model[0].weight
    x = torch.randn(2, 64)
    expected = model(x).detach()
    with pytest.warns(UserWarning, match="re-quantizes"):
        lora.merge(twin)
    lora.unmerge(twin)
    assert torch.equal(twin(x), expected) and torch.equal(model(x), expected)


def test_4bit_classes_without_bitsandbytes_raise_lora_error(monkeypatch):
    import importlib.util
    import sys

    from lora_core import quantized

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if bitsandbytes were not installed
    spec = importlib.util.spec_from_file_location("quantized_without_bnb", quantized.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("LoRALinear4bit", "LoRAMergedLinear4bit", "LoRALinearNF4", "LoRAMergedLinearFP4"):
        with pytest.raises(lora.LoRAError, match="install bitsandbytes"):
            getattr(module, name)(64, 32)
    with pytest.raises(lora.LoRAError, match="not a bitsandbytes Linear4bit"):
        module.lora_class_for(nn.Linear, fused=False)
