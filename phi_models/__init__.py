"""Hand-written Phi models (phi-1.5/2, Phi-3, 3.5, 4-mini) with exact checkpoint loading, 4-bit bases,
tokenizer, chat formats and generation. See docs/design.md for the contracts."""

import logging as _logging

# bitsandbytes (imported lazily, for 4-bit layers) warns at import on AVX512-BF16 CPUs that it could
# not fetch an optional inference kernel from the hub. We never want hub code, so the warning is noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

from .cache import KVCache
from .chat_format import CHAT_FORMATS, Segment, render_chat, render_chat_text
from .config import PhiConfig
from .errors import PhiModelError
from .adapters import attach_adapter
from .export_merged import export_merged
from .generation import generate
from .hub import HubError, fetch_file
from .loading import from_pretrained, parse_dtype
from .model import PhiForCausalLM
from .peft_adapter import export_peft_adapter, load_peft_adapter
from .presets import PRESETS, preset_names
from .sampling import SamplingParams
from .streaming import TextStream
from .tokenizer import PhiTokenizer, load_tokenizer

__all__ = [
    "attach_adapter",
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
