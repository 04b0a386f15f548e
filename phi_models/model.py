"""PhiForCausalLM: the module tree (paths equal transformers') and the model call contract."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from phi_models.attention import build_mask, window_visible_keys
from phi_models.cache import KVCache
from phi_models.config import PhiConfig
from phi_models.errors import PhiModelError
from phi_models.phi import PhiDecoderLayer
from phi_models.phi3 import Phi3DecoderLayer, RMSNorm
from phi_models.rope import RotaryEmbedding


class PhiBackbone(nn.Module):
    """Embedding, decoder layers and final norm; ``final_layernorm`` for phi, ``norm`` for phi3."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        block = PhiDecoderLayer if config.model_type == "phi" else Phi3DecoderLayer
        self.layers = nn.ModuleList(block(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = RotaryEmbedding(config)
        if config.model_type == "phi":
            self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        else:
            self.norm = RMSNorm(config.hidden_size, config.norm_eps)

    def final_norm(self) -> nn.Module:
        """The norm applied after the last layer."""
        return self.final_layernorm if hasattr(self, "final_layernorm") else self.norm


class PhiForCausalLM(nn.Module):
    """A Phi causal LM: ``model`` (backbone), ``lm_head`` and ``config``.

    ``forward`` returns logits (B, T, V); ``hidden_states`` the final-norm output (B, T, D).
    """

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        self.model = PhiBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.model_type == "phi")
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if config.model_type == "phi":
            # Legacy phi-msft module names that LoRA tutorials still target.
            self.lora_target_aliases = {"Wqkv": "qkv_proj", "out_proj": "dense"}
        self.gradient_checkpointing = False
        self._window = window_visible_keys(config)

    # ---- setup --------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer in backward (non-reentrant; works with a frozen base)."""
        self.gradient_checkpointing = bool(enabled)

    def compile_layers(self, **options) -> None:
        """``torch.compile`` each decoder layer in place (``options`` go to it); names and state_dict keys
        stay the same. The first steps of each new input shape pay the compilation."""
        for layer in self.model.layers:
            layer.compile(**options)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Deterministic random init (normal(0, 0.02) weights, zero biases, unit norms)."""
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float32).mul_(0.02).to(w.dtype))
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    def new_cache(self, capacity: int = 0) -> KVCache:
        """An empty KV cache for this model (``capacity``: expected total length, to avoid regrowth)."""
        return KVCache(self.config.num_hidden_layers, capacity)

    # ---- forward ------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for input_ids (B, T)."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, position_ids, document_ids, kv_cache))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, D); same keywords as ``forward``."""
        if input_ids.dim() != 2:
            raise PhiModelError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        past = kv_cache.length if kv_cache is not None else 0
        _check_shape("position_ids", position_ids, (B, T))
        _check_shape("document_ids", document_ids, (B, T))
        if attention_mask is not None and tuple(attention_mask.shape) not in {(B, T), (B, past + T)}:
            raise PhiModelError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected {(B, T)}"
                + (f" or {(B, past + T)} with the KV cache" if past else "")
            )
        if document_ids is not None and past:
            raise PhiModelError("document_ids cannot be combined with a non-empty KV cache; pass one of them")
        ids_checked = kv_cache is not None and kv_cache.ids_checked  # generate checked them at its boundary
        if (
            not ids_checked
            and input_ids.numel()
            and (int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0)
        ):
            raise PhiModelError(
                f"input_ids hold a token id outside [0, {self.config.vocab_size}); the tokenizer does not "
                f"match this model"
            )

        key_mask = None
        if attention_mask is not None:
            new_mask = attention_mask[:, -T:] if attention_mask.shape[1] != T else attention_mask
            if kv_cache is not None and attention_mask.shape[1] == T:
                key_mask = kv_cache.extend_mask(new_mask)
            else:
                key_mask = attention_mask.bool()
        elif kv_cache is not None and kv_cache.key_mask is not None:
            key_mask = kv_cache.extend_mask(torch.ones(B, T, dtype=torch.bool, device=input_ids.device))

        if position_ids is None:
            position_ids = _default_positions(B, T, attention_mask, kv_cache, input_ids.device)

        rotary = self.model.rotary_emb
        use_long = rotary.needs_long(position_ids)
        if kv_cache is not None:
            if past and kv_cache.rope_long is False and use_long:
                raise PhiModelError(
                    "LongRoPE switched to its long factors but the KV cache holds keys rotated with the short "
                    "ones: re-run the whole sequence without this cache (phi_models.generate does this itself)"
                )
            use_long = use_long or bool(kv_cache.rope_long)

        x = self.model.embed_dropout(self.model.embed_tokens(input_ids))
        cos, sin = rotary(position_ids, x.dtype, use_long)
        mask = build_mask(
            num_queries=T,
            past=past,
            key_mask=key_mask,
            document_ids=document_ids,
            window=self._window,
            device=input_ids.device,
        )
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.model.layers:
            if checkpointing and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.rope_long = use_long
            kv_cache.advance(T, key_mask, position_ids[:, -1])
        return self.model.final_norm()(x)


def _check_shape(name: str, value: torch.Tensor | None, shape: tuple[int, int]) -> None:
    if value is not None and tuple(value.shape) != shape:
        raise PhiModelError(f"{name} has shape {tuple(value.shape)}; expected {shape} like input_ids")


def _default_positions(
    B: int, T: int, attention_mask: torch.Tensor | None, cache: KVCache | None, device: torch.device
) -> torch.Tensor:
    """Positions counting real tokens only (so left padding does not shift them), continuing the cache."""
    if cache is not None and cache.next_positions is not None:
        return cache.next_positions[:, None] + torch.arange(T, device=device)[None]
    start = cache.length if cache is not None else 0
    if attention_mask is None:
        return torch.arange(start, start + T, device=device)[None].expand(B, T)
    mask = attention_mask[:, -T:].long()
    return (mask.cumsum(-1) - 1).clamp(min=0) + start
