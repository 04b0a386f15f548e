"""inject: add LoRA to the matching layers of any PyTorch model, in place."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from lora_core.adapters import attach_slot, check_adapter_name, new_slot, set_active_adapters
from lora_core.base import DEFAULT_ADAPTER, LoRALayer
from lora_core.conv1d import is_conv1d, make_lora_conv1d
from lora_core.dropout import LoRADropout
from lora_core.errors import LoRAError
from lora_core.layers import (
    Embedding,
    InjectedConv1d,
    InjectedConv2d,
    InjectedConv3d,
    Linear,
    create_conv_lora_parameters,
)
from lora_core.linear4bit import is_linear4bit
from lora_core.merged import MergedLinear
from lora_core.utils import mark_only_lora_as_trainable

Targets = str | Sequence[str]

_CONV_CLASSES = {nn.Conv1d: InjectedConv1d, nn.Conv2d: InjectedConv2d, nn.Conv3d: InjectedConv3d}
_MAX_LISTED = 40


_PLAIN_CLASSES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_supported(module: nn.Module) -> bool:
    return isinstance(module, _PLAIN_CLASSES) or is_linear4bit(module) or is_conv1d(module)


def virtual_slice_name(module_name: str, slice_name: str) -> str:
    """The name of a fused module's slice: its parent path plus the slice name
    ('model.layers.0.self_attn.qkv_proj', 'q_proj') -> 'model.layers.0.self_attn.q_proj'."""
    parent = module_name.rpartition(".")[0]
    return f"{parent}.{slice_name}" if parent else slice_name


def _compile_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise LoRAError(f"target pattern {pattern!r} is not a valid regular expression: {err}") from None


def make_matcher(targets: Targets, aliases: dict[str, str] | None = None) -> Callable[[str], bool]:
    """A predicate over module names. A string is a regex full-matched against the name (PEFT's
    convention); a list matches each item exactly or as a dotted suffix, or as a regex when the
    item starts with 're:'. `aliases` renames the last component of list items."""
    if isinstance(targets, str):
        regex = _compile_regex(targets)
        return lambda name: regex.fullmatch(name) is not None
    if not isinstance(targets, (list, tuple, set, frozenset)):
        raise LoRAError(
            f'targets={targets!r} must be a regex string, "all-linear" or a list of module names, '
            f"e.g. ['q_proj', 'v_proj']"
        )
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


def _candidates(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER) -> list[tuple[str, nn.Module]]:
    # Plain supported layers, and LoRA layers (of the kinds inject makes) not yet carrying adapter_name.
    found = []
    for name, module in model.named_modules():
        if not name or not _is_supported(module):
            continue
        if isinstance(module, LoRALayer) and module.has_adapter(adapter_name):
            continue
        found.append((name, module))
    return found


def _describe_candidates(candidates: list[tuple[str, nn.Module]]) -> str:
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


def _check_slices(name: str, module: nn.Module) -> dict[str, int]:
    slices = dict(module.lora_slices)
    if sum(slices.values()) != module.out_features:
        raise LoRAError(
            f"{name}.lora_slices={slices} sums to {sum(slices.values())}, not out_features={module.out_features}"
        )
    return slices


def _check_plain_forward(name: str, module: nn.Module, base_cls: type) -> None:
    # Swapping the class replaces forward: only safe when the module runs the torch layer's own.
    if type(module).forward is not base_cls.forward:
        raise LoRAError(
            f"{name}: {type(module).__name__} overrides {base_cls.__name__}.forward; "
            f"lora_core cannot add LoRA to it safely; exclude it"
        )


def inject(
    model: nn.Module,
    targets: Targets,
    r: int = 8,
    lora_alpha: float = 8,
    lora_dropout: float = 0.0,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    use_rslora: bool = False,
    use_dora: bool = False,
    lora_dtype: torch.dtype | None = None,
    exclude: Targets | None = None,
    fan_in_fan_out: bool = False,
    merge_weights: bool = False,
    freeze_base: bool = True,
    fast_dropout: bool = True,
) -> list[str]:
    """Give LoRA to the layers of `model` whose names match `targets`, in place.

    Matching nn.Linear / nn.Embedding / nn.Conv1d/2d/3d / transformers Conv1D / bitsandbytes
    Linear4bit modules become lora_core layers (the same objects, sharing their weight tensors,
    device and dtype); LoRA parameters are fp32 unless `lora_dtype` says otherwise. `targets` may be
    "all-linear" (every Linear/Conv1D/Linear4bit but the output head, PEFT's set). Fused modules
    carrying `lora_slices` can be targeted whole or per slice (virtual names, see docs/design.md).
    `rank_pattern` / `alpha_pattern` map a module name or regex (PEFT's rule: it matches the end of
    the name) to that module's rank / alpha. `adapter_name` other than "default" adds a named
    adapter beside the others (adapters.py); the default one keeps loralib's `lora_A`/`lora_B`.
    `merge_weights` keeps loralib's merge-on-eval (off by default here). With `freeze_base`, only
    LoRA parameters stay trainable. `fast_dropout` draws CPU dropout masks the cheaper way (same
    distribution, different masks than nn.Dropout for a seed; see dropout.py). Returns the adapted
    names (virtual names for slices). `fan_in_fan_out=True` is refused for nn.Linear and Linear4bit
    targets, whose weights are (out, in) already; Conv1D's (in, out) layout is handled on its own.
    Every argument is checked before the model is touched: a refused call changes nothing.
    """
    _check_arguments(
        model,
        r,
        lora_alpha,
        lora_dropout,
        adapter_name,
        rank_pattern,
        alpha_pattern,
        dict(
            use_rslora=use_rslora,
            use_dora=use_dora,
            fan_in_fan_out=fan_in_fan_out,
            merge_weights=merge_weights,
            freeze_base=freeze_base,
            fast_dropout=fast_dropout,
        ),
        lora_dtype,
    )
    aliases = getattr(model, "lora_target_aliases", None)
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        linear = set(all_linear_names(model))
        wanted = linear.__contains__
    else:
        wanted = make_matcher(targets, aliases)
    unwanted = make_matcher(exclude, aliases) if exclude else (lambda name: False)

    def selects(name: str) -> bool:
        return wanted(name) and not unwanted(name)

    candidates = _candidates(model, adapter_name)
    plan = []  # (name, module, enabled slice names or None, r, alpha)
    for name, module in candidates:
        slices = getattr(module, "lora_slices", None)
        chosen = [s for s in slices or {} if selects(virtual_slice_name(name, s))]
        if selects(name) and chosen:
            raise LoRAError(
                f"targets match both the fused module {name} and its slices {chosen}; "
                f"name either the whole module or slices, not both"
            )
        if selects(name) or chosen:
            names = [virtual_slice_name(name, s) for s in chosen] if chosen else [name]
            ranks = {pattern_value(rank_pattern, n, r) for n in names}
            alphas = {pattern_value(alpha_pattern, n, lora_alpha) for n in names}
            if len(ranks) > 1 or len(alphas) > 1:
                raise LoRAError(
                    f"{name}: the slices {chosen} share one LoRA layer and need one rank and alpha, "
                    f"but rank_pattern/alpha_pattern give ranks {sorted(ranks)} and alphas "
                    f"{sorted(alphas)}; give them the same values"
                )
            plan.append((name, module, chosen or None, ranks.pop(), alphas.pop()))
    if not plan:
        raise LoRAError(
            f"targets={targets!r} match no layer of {type(model).__name__}; "
            f"layers that can take LoRA: {_describe_candidates(candidates)}"
        )
    _check_plan(model, plan, adapter_name, use_dora, fan_in_fan_out)

    _disable_fused_fast_paths(model, [name for name, _, _, _, _ in plan])
    adapted = []
    for name, module, chosen, module_r, module_alpha in plan:
        options = dict(r=module_r, lora_alpha=module_alpha, lora_dropout=lora_dropout, merge_weights=merge_weights)
        if adapter_name == DEFAULT_ADAPTER:
            _adapt(name, module, chosen, options, use_rslora, use_dora, lora_dtype)
            dropout = module.lora_dropout
        else:
            dropout = _add_named(module, chosen, adapter_name, options, use_rslora, lora_dtype)
        if isinstance(dropout, LoRADropout):
            dropout.fast_mask = fast_dropout
        dropout.train(module.training)  # a model already in eval() must not start dropping out
        if chosen:
            adapted.extend(virtual_slice_name(name, s) for s in chosen)
        else:
            adapted.append(name)
    if freeze_base:
        mark_only_lora_as_trainable(model)
    options = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout)
    _record_config(
        model, adapter_name, targets, exclude, options, use_rslora, use_dora, adapted, rank_pattern, alpha_pattern
    )
    chosen_active = getattr(model, "lora_active_adapters", None)
    if chosen_active is not None:  # a restricted active set: it gains the new adapter
        set_active_adapters(model, list(dict.fromkeys(list(chosen_active) + [adapter_name])))
    return adapted


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_alpha(value, what: str) -> None:
    if not _is_number(value) or not math.isfinite(value) or value == 0:
        raise LoRAError(f"{what}={value!r} must be a finite, non-zero number (e.g. 16)")


def _check_rank(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LoRAError(f"{what}={value!r}: inject needs a LoRA rank r >= 1 (an int)")


def _check_arguments(
    model, r, lora_alpha, lora_dropout, adapter_name, rank_pattern, alpha_pattern, flags, lora_dtype
) -> None:
    """Every scalar argument of inject, checked before anything is changed."""
    if not isinstance(model, nn.Module):
        raise LoRAError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    _check_rank(r, "r")
    _check_alpha(lora_alpha, "lora_alpha")
    if not _is_number(lora_dropout) or not 0.0 <= float(lora_dropout) < 1.0:
        raise LoRAError(f"lora_dropout={lora_dropout!r} must be a number in [0, 1)")
    check_adapter_name(adapter_name)
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise LoRAError(f"{flag}={value!r} must be True or False")
    if lora_dtype is not None and not (isinstance(lora_dtype, torch.dtype) and lora_dtype.is_floating_point):
        raise LoRAError(f"lora_dtype={lora_dtype!r} must be None or a floating-point torch.dtype, e.g. torch.float32")
    for what, pattern, check in (
        ("rank_pattern", rank_pattern, _check_rank),
        ("alpha_pattern", alpha_pattern, _check_alpha),
    ):
        if pattern is None:
            continue
        if not isinstance(pattern, dict):
            raise LoRAError(f"{what}={pattern!r} must be a dict of module name or regex -> value")
        for key, value in pattern.items():
            if not isinstance(key, str) or not key:
                raise LoRAError(f"{what} key {key!r} must be a non-empty module name or regex")
            _compile_regex(key)
            check(value, f"{what}[{key!r}]")


def pattern_value(pattern: dict[str, object] | None, module_name: str, default):
    """PEFT's rank_pattern / alpha_pattern rule: the value of the first key (in order) that, as a
    regex, matches the whole name or its end after a '.'; `default` when none does."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def _check_plan(model, plan, adapter_name: str, use_dora: bool, fan_in_fan_out: bool) -> None:
    """Refuse, before any change, every planned layer that cannot take this adapter."""
    parents = dict(model.named_modules())
    for name, module, chosen, _, _ in plan:
        parent = parents.get(name.rpartition(".")[0]) if "." in name else model
        if isinstance(parent, nn.MultiheadAttention):
            raise LoRAError(
                f"{name}: nn.MultiheadAttention uses its out_proj weight directly, so LoRA there "
                f"would have no effect; exclude it (exclude=[{name!r}])"
            )
        if fan_in_fan_out and isinstance(module, nn.Linear):
            # Linear (and Linear4bit) keep weight as (out, in); treating it as (in, out) would be
            # silently wrong on square layers and a shape error on the rest.
            raise LoRAError(
                f"{name}: fan_in_fan_out=True is for GPT-2 Conv1D-style (in, out) weights, but "
                f"{type(module).__name__} stores (out, in) {tuple(module.weight.shape)}; "
                f"drop fan_in_fan_out=True"
            )
        if use_dora:
            if adapter_name != DEFAULT_ADAPTER:
                raise LoRAError(
                    f"use_dora=True is supported for the default adapter only, not for adapter_name={adapter_name!r}"
                )
            if chosen:
                raise LoRAError(
                    f"{name}: use_dora=True on slices {chosen} of a fused layer is not supported; "
                    f"target the whole module ({name.rpartition('.')[2]}) or turn DoRA off"
                )
            if not (isinstance(module, nn.Linear) and not is_linear4bit(module)):
                raise LoRAError(
                    f"{name}: use_dora=True supports dense nn.Linear layers only, "
                    f"not {type(module).__name__}; exclude it or turn DoRA off"
                )
        if isinstance(module, LoRALayer):
            if module.merged:
                raise LoRAError(
                    f"{name} is merged; call lora_core.unmerge(model) before adding adapter {adapter_name!r}"
                )
            if adapter_name != DEFAULT_ADAPTER and module.use_dora:
                raise LoRAError(f"{name} carries a DoRA default adapter; named adapters beside DoRA are not supported")
            if use_dora and module.adapter_names():
                raise LoRAError(
                    f"{name} already carries adapters {module.adapter_names()}; DoRA cannot be added beside them"
                )
        else:
            base_cls = next((t for t in _PLAIN_CLASSES if isinstance(module, t)), None)
            if base_cls is not None and not is_linear4bit(module) and not is_conv1d(module):
                _check_plain_forward(name, module, base_cls)
        if chosen:
            _check_slices(name, module)


def _keep_module_forward(module, args):
    return None


def _disable_fused_fast_paths(model: nn.Module, names: list[str]) -> None:
    # nn.TransformerEncoderLayer's inference fast path reads linear1/linear2 weights directly
    # and would skip LoRA; torch takes the ordinary path whenever a submodule has a hook.
    modules = dict(model.named_modules())
    for name in names:
        parts = name.split(".")
        ancestors = [modules[".".join(parts[:i])] for i in range(len(parts))]
        if any(isinstance(a, nn.TransformerEncoderLayer) for a in ancestors):
            modules[name].register_forward_pre_hook(_keep_module_forward)


def _adapt(name, module, chosen, options, use_rslora, use_dora, lora_dtype) -> None:
    """Give `module` (plain, or a LoRA layer without a default adapter) the default adapter."""
    enable = sizes = None
    if chosen:
        slices = _check_slices(name, module)
        enable = [s in chosen for s in slices]
        sizes = list(slices.values())
    if is_linear4bit(module):
        from lora_core.quantized import add_lora_to_linear4bit  # imports bitsandbytes (loaded already here)

        add_lora_to_linear4bit(
            module, enable_lora=enable, slice_sizes=sizes, use_rslora=use_rslora, lora_dtype=lora_dtype, **options
        )
        return
    if is_conv1d(module):
        if not isinstance(module, LoRALayer):
            make_lora_conv1d(module)
        LoRALayer.__init__(module, **options)
        module._create_lora_parameters(use_rslora, use_dora, lora_dtype)
    elif isinstance(module, nn.Linear):
        module.__class__ = MergedLinear if chosen else Linear
        LoRALayer.__init__(module, **options)
        module.fan_in_fan_out = False  # nn.Linear weights are (out, in); inject refuses True
        if chosen:
            module.configure_slices(enable, sizes)
            module._create_lora_parameters(use_rslora, lora_dtype)
        else:
            module._create_lora_parameters(use_rslora, use_dora, lora_dtype)
    elif isinstance(module, nn.Embedding):
        module.__class__ = Embedding
        LoRALayer.__init__(
            module,
            r=options["r"],
            lora_alpha=options["lora_alpha"],
            lora_dropout=0.0,
            merge_weights=options["merge_weights"],
        )
        module._create_lora_parameters(use_rslora, lora_dtype)
    else:
        conv_type = next(t for t in _CONV_CLASSES if isinstance(module, t))
        module.__class__ = _CONV_CLASSES[conv_type]
        LoRALayer.__init__(module, **options)
        create_conv_lora_parameters(module, module, use_rslora, lora_dtype)
    module.reset_lora_parameters()


def _as_lora_layer(module: nn.Module, merge_weights: bool) -> LoRALayer:
    """`module` as a LoRA layer of its kind with no default adapter (r = 0); LoRA layers as they are."""
    if isinstance(module, LoRALayer):
        return module
    if is_conv1d(module):
        return make_lora_conv1d(module, merge_weights)
    if is_linear4bit(module):
        from lora_core.quantized import as_lora_linear4bit  # imports bitsandbytes (loaded already here)

        as_lora_linear4bit(module, fused=False)
    elif isinstance(module, nn.Linear):
        module.__class__ = Linear
    elif isinstance(module, nn.Embedding):
        module.__class__ = Embedding
    else:
        conv_type = next(t for t in _CONV_CLASSES if isinstance(module, t))
        module.__class__ = _CONV_CLASSES[conv_type]
    LoRALayer.__init__(module, r=0, lora_alpha=1, lora_dropout=0.0, merge_weights=merge_weights)
    module.fan_in_fan_out = False
    return module


def _add_named(module, chosen, adapter_name, options, use_rslora, lora_dtype) -> nn.Module:
    """Add the named adapter `adapter_name` to `module` as an AdapterSlot; returns its dropout."""
    layer = _as_lora_layer(module, options["merge_weights"])
    enable = sizes = None
    if chosen:
        slices = dict(module.lora_slices)
        enable = [s in chosen for s in slices]
        sizes = list(slices.values())
    dropout = 0.0 if isinstance(layer, nn.Embedding) else options["lora_dropout"]
    slot = new_slot(
        layer,
        options["r"],
        options["lora_alpha"],
        dropout,
        use_rslora=use_rslora,
        lora_dtype=lora_dtype,
        enable_lora=enable,
        slice_sizes=sizes,
    )
    attach_slot(layer, adapter_name, slot)
    return slot.lora_dropout


def _record_config(
    model, adapter_name, targets, exclude, options, use_rslora, use_dora, adapted, rank_pattern, alpha_pattern
) -> None:
    # Kept on the root so save_adapter can write it without the caller repeating it; one config per
    # adapter name in lora_core_adapters, the default adapter's also in lora_core_config.
    configs = getattr(model, "lora_core_adapters", None)
    if configs is None:
        configs = {}
        if getattr(model, "lora_core_config", None):
            configs[DEFAULT_ADAPTER] = model.lora_core_config
        model.lora_core_adapters = configs
    previous = configs.get(adapter_name) or {}
    config = dict(
        options,
        targets=targets if isinstance(targets, str) else list(targets),
        exclude=exclude if exclude is None or isinstance(exclude, str) else list(exclude),
        use_rslora=use_rslora,
        use_dora=use_dora,
        adapted=list(previous.get("adapted", [])) + adapted,
    )
    if rank_pattern:
        config["rank_pattern"] = dict(rank_pattern)
    if alpha_pattern:
        config["alpha_pattern"] = dict(alpha_pattern)
    if adapter_name != DEFAULT_ADAPTER:
        config["adapter_name"] = adapter_name
    else:
        model.lora_core_config = config
    configs[adapter_name] = config


ALL_LINEAR = "all-linear"


def all_linear_names(model: nn.Module) -> list[str]:
    """PEFT's "all-linear" set: the names of every nn.Linear (Linear4bit included) and transformers
    Conv1D module, without the output head (`model.get_output_embeddings()` when the model has that
    method, else a root `lm_head`)."""
    head = None
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        head = getter()
    elif isinstance(getattr(model, "lm_head", None), nn.Module):
        head = model.lm_head
    names = []
    for name, module in model.named_modules():
        if name and module is not head and (isinstance(module, nn.Linear) or is_conv1d(module)):
            names.append(name)
    return names
