"""PhiTokenizer: a ``tokenizers`` tokenizer with the model's special tokens, stop ids and chat format."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from phi_models.chat_format import CHAT_FORMATS, Segment, render_chat
from phi_models.errors import PhiModelError
from phi_models.hub import HubFileMissing
from phi_models.json_files import read_json
from phi_models.presets import PRESET_CHAT_FORMATS, tiny_tokenizer_path
from phi_models.shipped_template import SPECIAL_TOKEN_NAMES, ShippedTemplate, find_shipped_template, render_shipped
from phi_models.source import resolve_source

_AUTO = object()
_END_OF_TURN = {"phi3": "<|end|>", "phi3.5": "<|end|>", "phi4-mini": "<|end|>", "phi4": "<|im_end|>"}


class PhiTokenizer:
    """Text <-> ids for a Phi model. ``encode`` adds no BOS/EOS; special tokens in text become their ids."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        extra_stop_ids: Iterable[int] = (),
        chat_format: str | None = None,
        name: str = "",
        chat_template: ShippedTemplate | None = None,
        special_tokens: Mapping[str, str | None] | None = None,
    ):
        if chat_format is not None and chat_format not in CHAT_FORMATS:
            raise PhiModelError(f"unknown chat format '{chat_format}'; expected one of {CHAT_FORMATS} or None")
        self.backend = backend
        self.name = name
        self.chat_format = chat_format
        # The folder's own Jinja template (None: none shipped); apply_chat_template renders it when present.
        self.chat_template = chat_template
        names = dict(special_tokens or {})
        for key, value in (("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token)):
            names.setdefault(key, value)
        # What transformers passes a template as variables: the named special tokens that are set.
        self.special_tokens_map = {k: names[k] for k in SPECIAL_TOKEN_NAMES if names.get(k) is not None}
        self.bos_token_id = self._known_id(bos_token, "bos_token")
        self.eos_token_id = self._known_id(eos_token, "eos_token")
        self.pad_token_id = self._known_id(pad_token, "pad_token")
        stops: list[int] = []
        end_of_turn = self.backend.token_to_id(_END_OF_TURN[chat_format]) if chat_format else None
        for token_id in (self.eos_token_id, end_of_turn, *extra_stop_ids):
            if token_id is not None and token_id not in stops:
                stops.append(int(token_id))
        self.stop_token_ids = stops

    def _known_id(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise PhiModelError(f"{self.name or 'tokenizer'}: {what} '{token}' is not in the vocabulary")
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS/EOS added."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of one token string, or None."""
        return self.backend.token_to_id(token)

    def render_chat(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = False) -> list[Segment]:
        """The conversation in this model's chat format, as Segments (see chat_format.py)."""
        if self.chat_format is None:
            raise PhiModelError(
                f"{self.name or 'this tokenizer'} has no chat format (a base model); pick a prompt template "
                f"instead, or load the tokenizer with chat_format=one of {CHAT_FORMATS}"
            )
        return render_chat(messages, self.chat_format, add_generation_prompt)

    def apply_chat_template(
        self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = False, **variables: Any
    ) -> str:
        """The conversation rendered as text.

        With a shipped template (``chat_template``) this is exactly transformers' ``apply_chat_template``
        (``tokenize=False``), whatever the template writes (a BOS, a final EOS, dropped messages);
        otherwise the hand-written chat format (no final EOS). ``variables`` reach the Jinja template only.
        """
        if self.chat_template is not None:
            return render_shipped(
                self.chat_template.source, messages, self.special_tokens_map, add_generation_prompt, **variables
            )
        return "".join(s.text for s in self.render_chat(messages, add_generation_prompt))

    def __repr__(self) -> str:
        return f"PhiTokenizer({self.name!r}, vocab_size={self.vocab_size}, chat_format={self.chat_format!r})"


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = read_json(path, "tokenizer/model settings file")
    return data if isinstance(data, dict) else {}


def _token_ids(value: Any, where: str) -> list[int]:
    """An id or a list of ids from a settings file; anything else is an error naming the field."""
    ids = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31 for i in ids):
        raise PhiModelError(f"{where}: expected a token id or a list of token ids, got {value!r:.60}")
    return ids


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise PhiModelError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise PhiModelError(f"{path}: cannot be read ({err.strerror})") from None


def _detect_chat_format(backend: Tokenizer, template: str | None) -> str | None:
    has = lambda token: backend.token_to_id(token) is not None  # noqa: E731
    if has("<|im_start|>") and has("<|im_sep|>"):
        return "phi4"
    if has("<|tool_call|>") or has("<|endofprompt|>"):
        return "phi4-mini"
    if has("<|assistant|>") and has("<|end|>"):
        # Phi-3.5's template writes the system message only when its content is non-empty.
        if template and "'system' and message['content']" in template:
            return "phi3.5"
        return "phi3"
    return None


def _load_backend(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust error text is the useful part
        raise PhiModelError(f"{path}: not a readable tokenizer.json ({err})") from None


def load_tokenizer(name_or_path: str | Path, revision: str | None = None, chat_format: Any = _AUTO) -> PhiTokenizer:
    """The tokenizer of a preset, hub repo id or local model directory.

    Special tokens come from tokenizer_config.json / special_tokens_map.json / config.json, stop ids
    also from generation_config.json. ``chat_format`` overrides the detected format (None disables it).
    """
    source = resolve_source(name_or_path, revision)
    if source.kind == "tiny":
        backend = _load_backend(tiny_tokenizer_path())
        detected = _detect_chat_format(backend, None)
        fmt = detected if chat_format is _AUTO else chat_format
        eos = "<|endoftext|>" if backend.token_to_id("<|endoftext|>") is not None else None
        return PhiTokenizer(backend, bos_token=eos, eos_token=eos, chat_format=fmt, name="tiny")

    try:
        tokenizer_file = source.file("tokenizer.json")
    except (PhiModelError, HubFileMissing):
        raise PhiModelError(
            f"{source.name}: no tokenizer.json; phi_models reads the fast-tokenizer file only "
            f"(save one with transformers' tokenizer.save_pretrained, or copy it from the official repo)"
        ) from None
    backend = _load_backend(tokenizer_file)
    tok_config = _read_json(source.file("tokenizer_config.json", required=False))
    shipped = find_shipped_template(lambda filename: _read_text(source.file(filename, required=False)), tok_config)
    special_map = _read_json(source.file("special_tokens_map.json", required=False))
    model_config = _read_json(source.file("config.json", required=False))
    gen_config = _read_json(source.file("generation_config.json", required=False))

    def special(name: str) -> str | None:
        token = _token_text(tok_config.get(name)) or _token_text(special_map.get(name))
        if token is None and model_config.get(f"{name}_id") is not None:
            ids = _token_ids(model_config[f"{name}_id"], f"{source.name} config.json {name}_id")
            token = backend.id_to_token(ids[0]) if ids else None
        return token

    extra_stops: list[int] = []
    for file, key_source in (("generation_config.json", gen_config), ("config.json", model_config)):
        extra_stops += _token_ids(key_source.get("eos_token_id"), f"{source.name} {file} eos_token_id")

    if chat_format is _AUTO:
        if source.preset is not None:
            fmt = PRESET_CHAT_FORMATS[source.preset]
        else:
            fmt = _detect_chat_format(backend, shipped.source if shipped else None)
    else:
        fmt = chat_format
    return PhiTokenizer(
        backend,
        bos_token=special("bos_token"),
        eos_token=special("eos_token"),
        pad_token=special("pad_token"),
        extra_stop_ids=extra_stops,
        chat_format=fmt,
        name=source.name,
        chat_template=shipped,
        special_tokens={name: special(name) for name in SPECIAL_TOKEN_NAMES},
    )
