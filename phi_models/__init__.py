"""Hand-written Phi models (phi-1.5/2, Phi-3, 3.5, 4-mini) with exact checkpoint loading, 4-bit bases,
tokenizer, chat formats and generation. See docs/design.md for the contracts."""

import logging as _logging

from phi_models.adapters import attach_adapter
from phi_models.cache import KVCache
from phi_models.chat_format import CHAT_FORMATS, Segment, render_chat, render_chat_text
from phi_models.config import PhiConfig, default_lora_targets
from phi_models.errors import PhiModelError
from phi_models.export_merged import export_merged
from phi_models.generation import generate
from phi_models.hub import HubError, fetch_file
from phi_models.loading import from_pretrained, parse_dtype
from phi_models.model import PhiForCausalLM
from phi_models.peft_adapter import export_peft_adapter, load_peft_adapter
from phi_models.presets import PRESETS, preset_names
from phi_models.sampling import SamplingParams
from phi_models.streaming import TextStream
from phi_models.tokenizer import PhiTokenizer, load_tokenizer

# bitsandbytes (imported lazily, for 4-bit layers) warns at import on AVX512-BF16 CPUs that it could
# not fetch an optional inference kernel from the hub. We never want hub code, so the warning is noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

__all__ = [
    "attach_adapter",
    "default_lora_targets",
    "export_merged",
    "export_peft_adapter",
    "load_peft_adapter",
    "CHAT_FORMATS",
    "HubError",
    "KVCache",
    "PRESETS",
    "PhiConfig",
    "PhiForCausalLM",
    "PhiModelError",
    "PhiTokenizer",
    "SamplingParams",
    "Segment",
    "TextStream",
    "fetch_file",
    "from_pretrained",
    "generate",
    "load_tokenizer",
    "parse_dtype",
    "preset_names",
    "render_chat",
    "render_chat_text",
]
