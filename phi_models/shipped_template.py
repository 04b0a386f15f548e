"""A model's own (shipped) Jinja chat template: finding it in a tokenizer folder and rendering it.

Rendering follows transformers' ``apply_chat_template`` (``transformers.utils.chat_template_utils``):
an ``ImmutableSandboxedEnvironment`` with ``trim_blocks``/``lstrip_blocks`` and the loop-controls
extension, the globals ``raise_exception``, ``strftime_now``, ``dict`` and ``namespace``, a ``tojson``
filter that does not escape HTML, a no-op ``{% generation %}`` block, and the variables ``messages``,
``tools``, ``documents``, ``add_generation_prompt`` plus the named special tokens (``bos_token``,
``eos_token``, ...). The template is data from a hub: it runs only inside the sandbox, never as Python.

Where the template lives (transformers' own order, newest layout first):
``chat_template.jinja`` (transformers >= 4.47 / 5), ``chat_template.json`` (``{"chat_template": ...}``,
the processor layout), then ``chat_template`` in ``tokenizer_config.json`` (a string, or a list of
``{"name", "template"}`` of which ``default`` is used).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from phi_models.errors import PhiModelError

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class ShippedTemplate:
    """A chat template and the file it came from (for reports and error messages)."""

    source: str  # Jinja text
    origin: str  # e.g. "chat_template.jinja" or "tokenizer_config.json"


def _pick_named(value: Any, origin: str) -> str | None:
    # tokenizer_config.json may hold several named templates; transformers uses "default" without tools.
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
        raise PhiModelError(f"{origin}: chat_template is a list without a 'default' entry (names: {sorted(named)})")
    if value is None:
        return None
    raise PhiModelError(
        f"{origin}: chat_template must be a string or a list of named templates, got {type(value).__name__}"
    )


def find_shipped_template(
    read_text: Callable[[str], str | None], tokenizer_config: Mapping[str, Any]
) -> ShippedTemplate | None:
    """The folder's chat template, or None. ``read_text(filename)`` returns a file's text or None if absent."""
    jinja_text = read_text("chat_template.jinja")
    if jinja_text is not None:
        return ShippedTemplate(jinja_text, "chat_template.jinja")
    json_text = read_text("chat_template.json")
    if json_text is not None:
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as err:
            raise PhiModelError(f"chat_template.json: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise PhiModelError("chat_template.json: expected an object with a 'chat_template' key")
        found = _pick_named(data.get("chat_template"), "chat_template.json")
        if found is not None:
            return ShippedTemplate(found, "chat_template.json")
    found = _pick_named(tokenizer_config.get("chat_template"), "tokenizer_config.json")
    return ShippedTemplate(found, "tokenizer_config.json") if found is not None else None


@lru_cache(maxsize=32)
def _compile(source: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        # transformers' AssistantTracker tag: `{% generation %}...{% endgeneration %}` renders its body.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class SafeDict:
        # `dict(...)` inside templates without handing them the dict type itself.
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class SafeNamespace(jinja2.utils.Namespace):
        # Namespaces refuse underscore names, as transformers' do, so no dunder can be stored.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates may not set {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = SafeDict()
    env.globals["namespace"] = SafeNamespace
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise PhiModelError(f"the model's chat template does not parse (line {err.lineno}: {err.message})") from None


def _plain(value: Any) -> Any:
    # Only plain JSON-like values reach the template (as in transformers): no objects with methods.
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return f"<{type(value).__name__}>"


def render_shipped(
    source: str,
    messages: Iterable[Mapping[str, Any]],
    special_tokens: Mapping[str, str],
    add_generation_prompt: bool = False,
    tools: list | None = None,
    **variables: Any,
) -> str:
    """Render ``messages`` with the Jinja chat template ``source`` exactly as transformers does.

    Keys whose value is None are dropped from each message first (transformers does the same).
    A template error (``raise_exception``, an undefined operation) becomes a PhiModelError.
    """
    import jinja2

    template = _compile(source)
    chat = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise PhiModelError(f"message {index} must be a dict with 'role' and 'content', got {message!r}")
        chat.append({k: _plain(v) for k, v in message.items() if v is not None})
    context = {**{k: v for k, v in special_tokens.items() if v is not None}, **_plain(variables)}
    try:
        return template.render(
            messages=chat, tools=_plain(tools), documents=None, add_generation_prompt=add_generation_prompt, **context
        )
    except jinja2.TemplateError as err:
        raise PhiModelError(f"the model's chat template refused the conversation: {err}") from None
