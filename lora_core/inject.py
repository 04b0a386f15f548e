"""inject: add LoRA to the matching layers of any PyTorch model, in place."""
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .base import LoRALayer
from .dropout import LoRADropout
from .errors import LoRAError
from .layers import (Embedding, InjectedConv1d, InjectedConv2d, InjectedConv3d, Linear,
                     create_conv_lora_parameters)
from .merged import MergedLinear
from .quantized import add_lora_to_linear4bit, is_linear4bit
from .utils import mark_only_lora_as_trainable

Targets = Union[str, Sequence[str]]

_CONV_CLASSES = {nn.Conv1d: InjectedConv1d, nn.Conv2d: InjectedConv2d, nn.Conv3d: InjectedConv3d}
_MAX_LISTED = 40


def _is_supported(module: nn.Module) -> bool:
    if isinstance(module, LoRALayer):
        return False
    return (isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d))
            or is_linear4bit(module))


def virtual_slice_name(module_name: str, slice_name: str) -> str:
    """The name of a fused module's slice: its parent path plus the slice name
    ('model.layers.0.self_attn.qkv_proj', 'q_proj') -> 'model.layers.0.self_attn.q_proj'."""
    parent = module_name.rpartition(".")[0]
    return f"{parent}.{slice_name}" if parent else slice_name


def _compile_regex(pattern: str) -> "re.Pattern":
    try:
        return re.compile(pattern)
    except re.error as err:
        raise LoRAError(f"target pattern {pattern!r} is not a valid regular expression: {err}") from None


def make_matcher(targets: Targets, aliases: Optional[Dict[str, str]] = None) -> Callable[[str], bool]:
    """A predicate over module names. A string is a regex full-matched against the name (PEFT's
    convention); a list matches each item exactly or as a dotted suffix, or as a regex when the
    item starts with 're:'. `aliases` renames the last component of list items."""
    if isinstance(targets, str):
        regex = _compile_regex(targets)
        return lambda name: regex.fullmatch(name) is not None
    items = list(targets)
    if not items or not all(isinstance(t, str) and t for t in items):
        raise LoRAError(f"targets={targets!r} must be a regex string or a non-empty list of module names")
    regexes, names = [], set()
    for item in items:
        if item.startswith("re:"):
            regexes.append(_compile_regex(item[3:]))
            continue
        head, _, last = item.rpartition(".")
        last = (aliases or {}).get(last, last)
        names.add(f"{head}.{last}" if head else last)

    def matches(name: str) -> bool:
        if name in names or any(name.endswith("." + n) for n in names):
            return True
        return any(regex.fullmatch(name) for regex in regexes)
    return matches


def _candidates(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    found = []
    for name, module in model.named_modules():
        if name and _is_supported(module):
            found.append((name, module))
    return found


def _describe_candidates(candidates: List[Tuple[str, nn.Module]]) -> str:
    lines = []
    for name, module in candidates:
        lines.append(f"{name} ({type(module).__name__})")
        for slice_name in getattr(module, "lora_slices", None) or {}:
            lines.append(f"{virtual_slice_name(name, slice_name)} (slice of {name})")
    if not lines:
        return "none: the model has no Linear, Embedding, Conv or Linear4bit layers"
    shown = ", ".join(lines[:_MAX_LISTED])
    more = len(lines) - _MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _check_slices(name: str, module: nn.Module) -> Dict[str, int]:
    slices = dict(module.lora_slices)
    if sum(slices.values()) != module.out_features:
        raise LoRAError(f"{name}.lora_slices={slices} sums to {sum(slices.values())}, "
                        f"not out_features={module.out_features}")
    return slices


def _check_plain_forward(name: str, module: nn.Module, base_cls: type) -> None:
    # Swapping the class replaces forward: only safe when the module runs the torch layer's own.
    if type(module).forward is not base_cls.forward:
        raise LoRAError(f"{name}: {type(module).__name__} overrides {base_cls.__name__}.forward; "
                        f"lora_core cannot add LoRA to it safely; exclude it")


def inject(model: nn.Module, targets: Targets, r: int = 8, lora_alpha: float = 8, lora_dropout: float = 0.0, *,
           use_rslora: bool = False, use_dora: bool = False, lora_dtype: Optional[torch.dtype] = None,
           exclude: Optional[Targets] = None, fan_in_fan_out: bool = False, merge_weights: bool = False,
           freeze_base: bool = True, fast_dropout: bool = True) -> List[str]:
    """Give LoRA to the layers of `model` whose names match `targets`, in place.

    Matching nn.Linear / nn.Embedding / nn.Conv1d/2d/3d / bitsandbytes Linear4bit modules become
    lora_core layers (the same objects, sharing their weight tensors, device and dtype); LoRA
    parameters are fp32 unless `lora_dtype` says otherwise. Fused modules carrying `lora_slices`
    can be targeted whole or per slice (virtual names, see docs/design.md). `merge_weights`
    keeps loralib's merge-on-eval (off by default here). With `freeze_base`, only LoRA
    parameters stay trainable. `fast_dropout` draws CPU dropout masks the cheaper way (same
    distribution, different masks than nn.Dropout for a seed; see dropout.py). Returns the
    adapted names (virtual names for slices). `fan_in_fan_out=True` is refused for nn.Linear and
    Linear4bit targets, whose weights are (out, in) already.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise LoRAError(f"r={r!r}: inject needs a LoRA rank r >= 1")
    aliases = getattr(model, "lora_target_aliases", None)
    wanted = make_matcher(targets, aliases)
    unwanted = make_matcher(exclude, aliases) if exclude else (lambda name: False)

    def selects(name: str) -> bool:
        return wanted(name) and not unwanted(name)

    candidates = _candidates(model)
    plan = []  # (name, module, enabled slice names or None)
    for name, module in candidates:
        slices = getattr(module, "lora_slices", None)
        chosen = [s for s in slices or {} if selects(virtual_slice_name(name, s))]
        if selects(name) and chosen:
            raise LoRAError(f"targets match both the fused module {name} and its slices {chosen}; "
                            f"name either the whole module or slices, not both")
        if selects(name) or chosen:
            plan.append((name, module, chosen or None))
    if not plan:
        raise LoRAError(f"targets={targets!r} match no layer of {type(model).__name__}; "
                        f"layers that can take LoRA: {_describe_candidates(candidates)}")

    parents = dict(model.named_modules())
    for name, module, _ in plan:
        parent = parents.get(name.rpartition(".")[0]) if "." in name else model
        if isinstance(parent, nn.MultiheadAttention):
            raise LoRAError(f"{name}: nn.MultiheadAttention uses its out_proj weight directly, so LoRA there "
                            f"would have no effect; exclude it (exclude=[{name!r}])")
        if fan_in_fan_out and isinstance(module, nn.Linear):
            # Linear (and Linear4bit) keep weight as (out, in); treating it as (in, out) would be
            # silently wrong on square layers and a shape error on the rest.
            raise LoRAError(f"{name}: fan_in_fan_out=True is for GPT-2 Conv1D-style (in, out) weights, but "
                            f"{type(module).__name__} stores (out, in) {tuple(module.weight.shape)}; "
                            f"drop fan_in_fan_out=True")
        if use_dora and not (isinstance(module, nn.Linear) and not is_linear4bit(module)):
            raise LoRAError(f"{name}: use_dora=True supports dense nn.Linear layers only, "
                            f"not {type(module).__name__}; exclude it or turn DoRA off")

    _disable_fused_fast_paths(model, [name for name, _, _ in plan])
    options = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
    adapted = []
    for name, module, chosen in plan:
        _adapt(name, module, chosen, options, use_rslora, use_dora, lora_dtype)
        if isinstance(module.lora_dropout, LoRADropout):
            module.lora_dropout.fast_mask = fast_dropout
        if chosen:
            adapted.extend(virtual_slice_name(name, s) for s in chosen)
        else:
            adapted.append(name)
    if freeze_base:
        mark_only_lora_as_trainable(model)
    _record_config(model, targets, exclude, options, use_rslora, use_dora, adapted)
    return adapted


def _keep_module_forward(module, args):
    return None


def _disable_fused_fast_paths(model: nn.Module, names: List[str]) -> None:
    # nn.TransformerEncoderLayer's inference fast path reads linear1/linear2 weights directly
    # and would skip LoRA; torch takes the ordinary path whenever a submodule has a hook.
    modules = dict(model.named_modules())
    for name in names:
        parts = name.split(".")
        ancestors = [modules[".".join(parts[:i])] for i in range(len(parts))]
        if any(isinstance(a, nn.TransformerEncoderLayer) for a in ancestors):
            modules[name].register_forward_pre_hook(_keep_module_forward)


def _adapt(name, module, chosen, options, use_rslora, use_dora, lora_dtype) -> None:
    enable = sizes = None
    if chosen:
        slices = _check_slices(name, module)
        enable = [s in chosen for s in slices]
        sizes = list(slices.values())
    if is_linear4bit(module):
        add_lora_to_linear4bit(module, enable_lora=enable, slice_sizes=sizes, use_rslora=use_rslora,
                               lora_dtype=lora_dtype, **options)
        return
    if isinstance(module, nn.Linear):
        _check_plain_forward(name, module, nn.Linear)
        module.__class__ = MergedLinear if chosen else Linear
        LoRALayer.__init__(module, **options)
        module.fan_in_fan_out = False  # nn.Linear weights are (out, in); inject refuses True
        if chosen:
            module.configure_slices(enable, sizes)
            module._create_lora_parameters(use_rslora, lora_dtype)
        else:
            module._create_lora_parameters(use_rslora, use_dora, lora_dtype)
    elif isinstance(module, nn.Embedding):
        _check_plain_forward(name, module, nn.Embedding)
        module.__class__ = Embedding
        LoRALayer.__init__(module, r=options["r"], lora_alpha=options["lora_alpha"], lora_dropout=0.0,
                           merge_weights=options["merge_weights"])
        module._create_lora_parameters(use_rslora, lora_dtype)
    else:
        conv_type = next(t for t in _CONV_CLASSES if isinstance(module, t))
        _check_plain_forward(name, module, conv_type)
        module.__class__ = _CONV_CLASSES[conv_type]
        LoRALayer.__init__(module, **options)
        create_conv_lora_parameters(module, module, use_rslora, lora_dtype)
    module.reset_lora_parameters()


def _record_config(model, targets, exclude, options, use_rslora, use_dora, adapted) -> None:
    # Kept on the root so save_adapter can write it without the caller repeating it.
    previous = getattr(model, "lora_core_config", None) or {}
    config = dict(options, targets=targets if isinstance(targets, str) else list(targets),
                  exclude=exclude if exclude is None or isinstance(exclude, str) else list(exclude),
                  use_rslora=use_rslora, use_dora=use_dora,
                  adapted=list(previous.get("adapted", [])) + adapted)
    config.pop("merge_weights")
    model.lora_core_config = config
