"""The model call contract: tiny preset, hidden_states/lm_head, packing, KV cache, checkpointing, fp16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import phi_models
from phi_models import PhiConfig, PhiForCausalLM, PhiModelError


@pytest.fixture(scope="module")
def tiny():
    return phi_models.from_pretrained("tiny")


def _ids(B, T, vocab=2048, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_tiny_is_deterministic_phi2_architecture(tiny):
    again = phi_models.from_pretrained("tiny")
    for (name, a), (_, b) in zip(tiny.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    c = tiny.config
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim) == (
        "phi",
        256,
        4,
        4,
        64,
    )
    assert (c.intermediate_size, c.rotary_dim, c.vocab_size, c.max_position_embeddings) == (1024, 32, 2048, 2048)
    assert 3e6 < sum(p.numel() for p in tiny.parameters()) < 6e6
    assert tiny.lm_head.bias is not None


def test_hidden_states_then_head_equals_forward(tiny):
    ids = _ids(2, 16)
    with torch.no_grad():
        hidden = tiny.hidden_states(ids)
        assert hidden.shape == (2, 16, 256)
        assert torch.allclose(tiny.lm_head(hidden), tiny(ids), atol=1e-6)


def test_packed_documents_equal_separate_sequences(tiny):
    first, second = _ids(1, 7, seed=1), _ids(1, 5, seed=2)
    packed = torch.cat([first, second, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # 4 padding tokens
    documents = torch.tensor([[1] * 7 + [2] * 5 + [0] * 4])
    positions = torch.tensor([list(range(7)) + list(range(5)) + [0] * 4])
    mask = (documents > 0).long()
    with torch.no_grad():
        out = tiny(packed, attention_mask=mask, position_ids=positions, document_ids=documents)
        assert torch.allclose(out[:, :7], tiny(first), atol=1e-5)
        assert torch.allclose(out[:, 7:12], tiny(second), atol=1e-5)
        assert torch.isfinite(out).all()


def test_kv_cache_matches_full_forward_with_padding(tiny):
    ids = _ids(2, 12, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        full = tiny(ids, attention_mask=mask)
        cache = tiny.new_cache()
        parts = [tiny(ids[:, :8], attention_mask=mask[:, :8], kv_cache=cache)]
        parts += [tiny(ids[:, t : t + 1], kv_cache=cache) for t in range(8, 12)]
    real = mask.bool()
    assert (torch.cat(parts, 1)[real] - full[real]).abs().max().item() <= 1e-5
    assert cache.length == 12


def test_gradient_checkpointing_same_grads_with_frozen_base(tiny):
    model = phi_models.from_pretrained("tiny").train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("mlp.fc1.bias"))  # a frozen base with a few trainable tensors
    ids = _ids(2, 16, seed=4)

    def grads(checkpointing):
        model.zero_grad(set_to_none=True)
        model.set_gradient_checkpointing(checkpointing)
        logits = model(ids)
        F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain, checkpointed = grads(False), grads(True)
    assert len(plain) == 4 and all(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, checkpointed):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("model_type", ["phi", "phi3"])
def test_loss_falls_when_training(model_type):
    config = PhiConfig(
        model_type=model_type, vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, resid_pdrop=0.1,
    )  # fmt: skip
    model = PhiForCausalLM(config)
    model.init_weights(0)
    model.train()
    ids = _ids(4, 16, vocab=128, seed=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


class _AttentionKernelDtypes(TorchDispatchMode):
    """Records the input dtypes of the SDPA kernel as dispatched, i.e. after autocast's casts."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[torch.dtype, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.name():
            self.seen.append(tuple(a.dtype for a in args[:3]))
        return func(*args, **(kwargs or {}))


def _phi2_with_large_qk_norms() -> PhiForCausalLM:
    """fp32 phi-2-shaped model whose q.k^T exceeds fp16's 65504 (hidden 160, 2 heads of 80)."""
    config = PhiConfig(
        model_type="phi", vocab_size=128, hidden_size=160, intermediate_size=640, num_hidden_layers=2,
        num_attention_heads=2, partial_rotary_factor=0.4,
    )  # fmt: skip
    model = PhiForCausalLM(config)
    model.init_weights(0)
    with torch.no_grad():
        for layer in model.model.layers:
            qkv = layer.self_attn.qkv_proj
            qkv.weight[:160].mul_(200.0)  # q rows: entries ~50, |q|^2 ~ 2e5 > 65504
            qkv.weight[160:320].copy_(qkv.weight[:160])  # k = q, so q.k is large and positive
    return model


def _assert_qk_overflows_fp16(model: PhiForCausalLM, ids: torch.Tensor) -> None:
    with torch.no_grad():
        layer = model.model.layers[0]
        h = layer.input_layernorm(model.model.embed_tokens(ids)).half()
        q, k, _ = F.linear(h, layer.self_attn.qkv_proj.weight.half()).split(160, dim=-1)
        naive = q.view(1, 24, 2, 80).transpose(1, 2) @ k.view(1, 24, 2, 80).transpose(1, 2).transpose(-1, -2)
        assert not torch.isfinite(naive).all()  # the fp16 product really overflows


def test_fp16_phi2_with_large_qk_norms_stays_finite():
    model = _phi2_with_large_qk_norms()
    ids = _ids(1, 24, vocab=128, seed=6)
    _assert_qk_overflows_fp16(model, ids)
    model = model.half()
    # CPU's fp16 SDPA kernels accumulate in fp32 and stay finite either way, so check the kernel
    # really got fp32 inputs (what keeps CUDA's fp16 kernels from overflowing).
    with torch.no_grad(), _AttentionKernelDtypes() as kernel:
        logits = model(ids)
    assert kernel.seen == [(torch.float32,) * 3] * 2
    assert logits.dtype == torch.float16
    assert torch.isfinite(logits).all()


@pytest.mark.skipif(not torch.amp.is_autocast_available("cpu"), reason="no CPU autocast")
def test_fp16_autocast_phi2_attention_runs_in_fp32():
    # Under autocast the Linear's q/k/v are fp16, RoPE promotes q/k to fp32, and SDPA sits on
    # autocast's lower-precision list: without the guard the kernel would see fp16 again.
    model = _phi2_with_large_qk_norms()
    ids = _ids(1, 24, vocab=128, seed=6)
    _assert_qk_overflows_fp16(model, ids)
    with torch.no_grad():
        reference = model(ids)
        with torch.autocast("cpu", dtype=torch.float16), _AttentionKernelDtypes() as kernel:
            logits = model(ids)
    assert kernel.seen == [(torch.float32,) * 3] * 2
    assert logits.dtype == torch.float16  # the rest of the model still runs under autocast
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits.float(), reference, rtol=0.05, atol=0.05)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), _AttentionKernelDtypes() as kernel:
        model(ids)
    assert kernel.seen == [(torch.bfloat16,) * 3] * 2  # bf16 has fp32's range: no upcast needed


def test_longrope_cache_refuses_to_mix_factor_sets():
    config = PhiConfig(
        model_type="phi3", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, rope_type="longrope", short_factor=[1.0] * 8, long_factor=[4.0] * 8,
        original_max_position_embeddings=8, max_position_embeddings=64,
    )  # fmt: skip
    model = PhiForCausalLM(config).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(_ids(1, 8, vocab=64), kv_cache=cache)
        with pytest.raises(PhiModelError, match="LongRoPE switched"):
            model(_ids(1, 1, vocab=64), kv_cache=cache)


def test_bad_call_arguments(tiny):
    with pytest.raises(PhiModelError, match="input_ids must be"):
        tiny(torch.zeros(5, dtype=torch.long))
    with pytest.raises(PhiModelError, match="position_ids has shape"):
        tiny(_ids(1, 4), position_ids=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(PhiModelError, match="outside \\[0, 2048\\)"):
        tiny(torch.tensor([[5, 4000]]))


def test_compiled_layers_give_the_eager_loss_and_lora_grads():
    import lora_core
    from philora.training.loss import chunked_lm_loss

    def loss_and_grads(compiled: bool):
        model = phi_models.from_pretrained("tiny")  # eval mode: no dropout, so both runs are deterministic
        torch.manual_seed(0)  # the same lora_A in both runs
        lora_core.inject(model, targets=["qkv_proj", "dense", "fc1", "fc2"], r=4, lora_alpha=8)
        lora_core.mark_only_lora_as_trainable(model)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # non-zero B, so every factor gets a gradient
                p.data.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
        if compiled:
            model.compile_layers()
        ids = _ids(2, 16, seed=5)
        documents = torch.tensor([[0] * 6 + [1] * 10, [0] * 16])  # a packed row: the boolean-mask path
        targets = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1)
        loss = chunked_lm_loss(model.lm_head, model.hidden_states(ids, document_ids=documents), targets)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    try:
        (eager_loss, eager), (compiled_loss, compiled) = loss_and_grads(False), loss_and_grads(True)
    finally:
        torch._dynamo.reset()
    assert compiled.keys() == eager.keys() and len(eager) == 2 * 4 * 4  # A and B of 4 linears in 4 layers
    assert torch.allclose(compiled_loss, eager_loss, rtol=1e-5)
    for name, grad in eager.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(compiled[name], grad, rtol=1e-4, atol=1e-6), name
