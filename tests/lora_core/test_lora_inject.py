"""inject into models that are not ours, the fused-slice protocol, target matching and errors."""

import pytest
import torch
import torch.nn as nn
import transformers

import lora_core as lora
from lora_core import LoRAError


def _train(model, loss_fn, steps=12, lr=1e-2):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_inject_into_transformer_encoder_layer_and_train():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    x, target = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
    layer.eval()
    before = layer(x).detach()
    weight_storage = layer.linear1.weight.data_ptr()
    names = lora.inject(layer, ["linear1", "linear2"], r=4, lora_alpha=8)
    assert names == ["linear1", "linear2"]
    assert isinstance(layer.linear1, lora.Linear) and layer.linear1.weight.data_ptr() == weight_storage
    torch.testing.assert_close(layer(x), before)  # B = 0: the base model's outputs
    layer.train()
    losses = _train(layer, lambda: (layer(x) - target).pow(2).mean())
    assert losses[-1] < 0.9 * losses[0]
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {
        "linear1.lora_A",
        "linear1.lora_B",
        "linear2.lora_A",
        "linear2.lora_B",
    }
    trained = layer(x).detach()
    layer.eval()
    with torch.no_grad():  # torch's fused inference path must not bypass the adapters
        torch.testing.assert_close(layer(x), trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("out_features", [8, 6])  # square: silently wrong before; non-square: shape error
def test_fan_in_fan_out_is_refused_for_linear_targets(out_features):
    model = nn.Sequential(nn.Linear(8, out_features))
    weight = model[0].weight
    with pytest.raises(LoRAError, match=r"0: fan_in_fan_out=True .* Linear stores \(out, in\)"):
        lora.inject(model, ["0"], r=2, fan_in_fan_out=True)
    # Refused before anything changed: the layer is still a plain, trainable nn.Linear.
    assert type(model[0]) is nn.Linear and model[0].weight is weight and weight.requires_grad


def test_multihead_attention_out_proj_is_refused():
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    with pytest.raises(LoRAError, match="self_attn.out_proj: nn.MultiheadAttention"):
        lora.inject(layer, ["out_proj"], r=2)


def test_inject_into_tiny_llama_and_train():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 12))
    before = model(ids).logits.detach()
    names = lora.inject(model, ["q_proj", "v_proj", "down_proj"], r=4, lora_alpha=8)
    assert names == [
        f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    ]
    torch.testing.assert_close(model(ids).logits, before)
    trainable, total = lora.trainable_parameters(model)
    assert trainable == 2 * (4 * (32 + 32) + 4 * (32 + 16) + 4 * (64 + 32))
    model.train()
    losses = _train(model, lambda: model(ids, labels=ids).loss, steps=15, lr=2e-2)
    assert losses[-1] < losses[0] - 0.3
    adapted = model.model.layers[0].self_attn.q_proj
    assert adapted.weight.grad is None and adapted.lora_B.abs().sum() > 0


class FusedAttention(nn.Module):
    """A toy block following the fused-slice protocol of docs/design.md."""

    def __init__(self):
        super().__init__()
        self.qkv_proj = nn.Linear(16, 32)
        self.qkv_proj.lora_slices = {"q_proj": 16, "k_proj": 8, "v_proj": 8}
        self.o_proj = nn.Linear(16, 16)

    def forward(self, x):
        q, k, v = self.qkv_proj(x).split([16, 8, 8], dim=-1)
        return self.o_proj(q) + torch.cat([k, v], -1)


class ToyModel(nn.Module):
    lora_target_aliases = {"Wqkv": "qkv_proj"}

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([FusedAttention() for _ in range(2)])
        self.embed = nn.Embedding(20, 16)

    def forward(self, ids):
        h = self.embed(ids)
        for block in self.layers:
            h = block(h)
        return h


def test_slice_targets_give_merged_linear_on_those_slices():
    torch.manual_seed(0)
    model = ToyModel()
    names = lora.inject(model, ["q_proj", "v_proj"], r=2)
    assert names == ["layers.0.q_proj", "layers.0.v_proj", "layers.1.q_proj", "layers.1.v_proj"]
    fused = model.layers[0].qkv_proj
    assert isinstance(fused, lora.MergedLinear)
    assert fused.enable_lora == [True, False, True] and fused.slice_sizes == (16, 8, 8)
    assert fused.lora_slices == {"q_proj": 16, "k_proj": 8, "v_proj": 8}
    assert [i["name"] for i in fused.slice_info() if i["enabled"]] == ["q_proj", "v_proj"]
    assert fused.lora_B.shape == (24, 2)


def test_whole_fused_module_target_gives_linear_and_aliases_apply():
    model = ToyModel()
    assert lora.inject(model, ["Wqkv"], r=2) == ["layers.0.qkv_proj", "layers.1.qkv_proj"]
    assert type(model.layers[1].qkv_proj) is lora.Linear


def test_module_and_slice_together_is_refused():
    with pytest.raises(LoRAError, match="both the fused module layers.0.qkv_proj and its slices"):
        lora.inject(ToyModel(), ["qkv_proj", "q_proj"], r=2)


def test_regex_targets_and_exclude():
    model = ToyModel()
    names = lora.inject(model, r"layers\.\d+\.(o_proj|q_proj)", r=2, exclude=["layers.1.o_proj"])
    assert names == ["layers.0.q_proj", "layers.0.o_proj", "layers.1.q_proj"]
    model = ToyModel()
    assert lora.inject(model, ["re:.*embed", "layers.1.o_proj"], r=2) == ["layers.1.o_proj", "embed"]
    assert isinstance(model.embed, lora.Embedding)


def test_no_match_lists_existing_layers():
    with pytest.raises(LoRAError) as info:
        lora.inject(ToyModel(), ["c_attn"], r=2)
    message = str(info.value)
    assert "match no layer of ToyModel" in message
    assert "layers.0.qkv_proj (Linear)" in message and "layers.1.v_proj (slice of layers.1.qkv_proj)" in message


def test_long_candidate_lists_are_truncated():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(100)])
    with pytest.raises(LoRAError, match=r"\.\.\. and 60 more"):
        lora.inject(model, ["nothing"], r=2)


def test_bad_arguments_are_refused():
    with pytest.raises(LoRAError, match="r=0"):
        lora.inject(ToyModel(), ["o_proj"], r=0)
    with pytest.raises(LoRAError, match="not a valid regular expression"):
        lora.inject(ToyModel(), "layers.(", r=2)
    with pytest.raises(LoRAError, match="embed: use_dora=True supports dense nn.Linear"):
        lora.inject(ToyModel(), ["embed", "o_proj"], r=2, use_dora=True)
    model = ToyModel()
    lora.inject(model, ["o_proj"], r=2)
    with pytest.raises(LoRAError, match="match no layer"):  # already adapted layers are not candidates
        lora.inject(model, ["o_proj"], r=2)


def test_bf16_model_keeps_dtype_and_device_with_fp32_lora():
    model = ToyModel().to(torch.bfloat16)
    lora.inject(model, ["o_proj", "embed"], r=2)
    layer = model.layers[0].o_proj
    assert layer.weight.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.float32
    assert model(torch.randint(0, 20, (2, 3))).dtype == torch.bfloat16
    lora.inject(model, ["q_proj"], r=2, lora_dtype=torch.bfloat16)
    assert model.layers[0].qkv_proj.lora_A.dtype == torch.bfloat16


def test_inject_into_convolutions_keeps_state_dict_keys():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, (3, 1)), nn.Conv3d(1, 2, 2))
    keys = set(model.state_dict())
    assert lora.inject(model, ["0", "2", "3"], r=2) == ["0", "2", "3"]
    assert keys <= set(model.state_dict())
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        model[0].lora_B.normal_()
    expected = nn.functional.conv1d(x, model[0].weight + model[0].delta_weight(), model[0].bias)
    torch.testing.assert_close(model[0](x), expected)
    assert model[2].delta_weight().shape == model[2].weight.shape


def test_layers_with_their_own_forward_are_refused():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Scaled(4, 4))
    with pytest.raises(LoRAError, match="0: Scaled overrides Linear.forward"):
        lora.inject(model, ["0"], r=2)
