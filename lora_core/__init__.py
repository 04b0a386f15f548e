"""lora_core: a loralib-compatible LoRA library for any PyTorch model.

`import lora_core as lora` runs loralib programs unchanged; beyond loralib it adds exact
merge/unmerge, unequal fused slices, injection by name, rsLoRA, DoRA, 4-bit bases and
safetensors adapter files.
"""

import logging as _logging

from lora_core.adapter_io import load_adapter, read_adapter, save_adapter
from lora_core.adapters import (
    AdapterSlot,
    active_adapters,
    adapter_names,
    adapter_rows,
    delete_adapter,
    set_active_adapters,
)
from lora_core.atomic import atomic_write, fsync_dir
from lora_core.base import DEFAULT_ADAPTER, LoRALayer
from lora_core.errors import BiasModeError, LoRAError
from lora_core.inject import all_linear_names, inject, make_matcher, pattern_value, virtual_slice_name
from lora_core.layers import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvLoRA,
    Embedding,
    InjectedConv1d,
    InjectedConv2d,
    InjectedConv3d,
    Linear,
)
from lora_core.merged import MergedLinear
from lora_core.merging import disable_adapters, lora_layers, merge, merge_and_unload, unmerge
from lora_core.peft_files import (
    check_peft_config,
    join_peft_tensors,
    peft_module_rank_alpha,
    read_peft_dir,
    split_peft_tensors,
    write_peft_dir,
)
from lora_core.peft_models import load_peft, save_peft
from lora_core.utils import (
    lora_state_dict,
    mark_only_lora_as_trainable,
    parameter_count,
    print_trainable_parameters,
    trainable_parameters,
)

name = "lora"  # loralib sets this too

# bitsandbytes (imported lazily, for 4-bit layers) warns at import on AVX512-BF16 CPUs that it could
# not fetch an optional inference kernel from the hub. We never want hub code, so the warning is noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

__all__ = [
    "LoRALayer",
    "Linear",
    "Embedding",
    "MergedLinear",
    "ConvLoRA",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "InjectedConv1d",
    "InjectedConv2d",
    "InjectedConv3d",
    "mark_only_lora_as_trainable",
    "lora_state_dict",
    "trainable_parameters",
    "print_trainable_parameters",
    "parameter_count",
    "inject",
    "make_matcher",
    "virtual_slice_name",
    "merge",
    "unmerge",
    "disable_adapters",
    "merge_and_unload",
    "lora_layers",
    "save_adapter",
    "load_adapter",
    "read_adapter",
    "atomic_write",
    "fsync_dir",
    "LoRAError",
    "BiasModeError",
    "DEFAULT_ADAPTER",
    "AdapterSlot",
    "adapter_names",
    "active_adapters",
    "set_active_adapters",
    "delete_adapter",
    "adapter_rows",
    "all_linear_names",
    "pattern_value",
    "load_peft",
    "save_peft",
    "read_peft_dir",
    "write_peft_dir",
    "split_peft_tensors",
    "join_peft_tensors",
    "peft_module_rank_alpha",
    "check_peft_config",
]
