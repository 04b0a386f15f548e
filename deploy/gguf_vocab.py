"""The tokenizer half of a model GGUF: tokens, token types, scores or merges, special ids, the chat template.

Two vocab kinds, as llama.cpp's converter picks them for Phi models:
- ``gpt2`` (phi-1.5/2, and Phi-4-mini whose tokenizer_config says GPT2Tokenizer): tokens and merges from
  tokenizer.json, a pre-tokenizer name llama.cpp knows;
- ``llama`` (Phi-3/3.5): SentencePiece pieces and scores from tokenizer.model (read here without the
  sentencepiece package: it is a small protobuf), then the added tokens on top.
Special token ids, add_bos/add_eos, merges and the chat template come from gguf.SpecialVocab.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from phi_models import PhiConfig
from philora.deploy.errors import DeployError
from philora.deploy.gguf_common import require_gguf

# The text llama.cpp hashes the token ids of to recognise a BPE pre-tokenizer (convert_hf_to_gguf.py).
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(ids of _CHECK_TEXT) -> llama.cpp pre-tokenizer name, for the tokenizers Phi models ship with.
_KNOWN_PRE = {
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
}
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise DeployError(f"{path}: not readable JSON ({err})") from None


def vocab_kind(config: PhiConfig, tokenizer_dir: Path) -> str:
    """'gpt2' or 'llama', as llama.cpp's converter decides for this model."""
    if config.model_type == "phi":
        return "gpt2"
    tok_config = _read_json(tokenizer_dir / "tokenizer_config.json")
    return "gpt2" if tok_config.get("tokenizer_class") == "GPT2Tokenizer" else "llama"


def add_vocab(writer, config: PhiConfig, tokenizer_dir: Path) -> None:
    """Write every tokenizer.* key for the model's tokenizer files in ``tokenizer_dir``."""
    gguf = require_gguf()
    if vocab_kind(config, tokenizer_dir) == "gpt2":
        tokens, types, pre = gpt2_tokens(config, tokenizer_dir)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(tokenizer_dir, load_merges=True)
        if (_read_json(tokenizer_dir / "tokenizer.json").get("post_processor") or {}).get("type") == "ByteLevel":
            # A byte-level post-processor adds no BOS/EOS: newer llama.cpp says so explicitly (gguf-py after 0.19).
            special.add_special_token.setdefault("bos", False)
            special.add_special_token.setdefault("eos", False)
        special.add_to_gguf(writer)
        return
    tokens, scores, types = llama_tokens(config, tokenizer_dir)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, n_vocab=len(tokens)).add_to_gguf(writer)


def _looks_special(token: str) -> bool:
    # llama.cpp marks <|...|> added tokens as control tokens even when the tokenizer does not.
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def gpt2_tokens(config: PhiConfig, tokenizer_dir: Path) -> tuple[list[str], list[int], str]:
    """(tokens, token types, pre-tokenizer name) of a byte-level BPE tokenizer.json, padded to the model's vocab."""
    from tokenizers import Tokenizer

    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise DeployError(f"{tokenizer_dir}: no tokenizer.json to write the GGUF vocabulary from")
    backend = Tokenizer.from_file(str(path))
    added = {int(t["id"]): t for t in _read_json(path).get("added_tokens", [])}
    by_id = {i: token for token, i in backend.get_vocab(with_added_tokens=True).items()}
    if by_id and max(by_id) >= config.vocab_size:
        raise DeployError(f"{path}: token id {max(by_id)} does not fit the model's {config.vocab_size} embedding rows")
    tokens, types = [], []
    for i in range(config.vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(_UNUSED)
            continue
        info = added.get(i)
        if info is None:
            types.append(_NORMAL)
        else:
            if not info.get("normalized", True):  # llama.cpp expects added tokens in normalized form
                token = backend.decode(backend.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
            if info.get("special") or _looks_special(token):
                types.append(_CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(_USER_DEFINED)
        tokens.append(token)
    ids = backend.encode(_CHECK_TEXT).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    # Unknown tokenizers (the built-in tiny one) are byte-level BPE with GPT-2's split rule, like phi-2's.
    return tokens, types, _KNOWN_PRE.get(digest, "phi-2")


def sentencepiece_pieces(path: Path) -> list[tuple[bytes, float, int]]:
    """(piece, score, type) of every entry of a SentencePiece tokenizer.model (ModelProto field 1)."""
    data = path.read_bytes()
    pieces, pos = [], 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 2:
                size, pos = _varint(data, pos)
                if field == 1:
                    pieces.append(_piece(data[pos : pos + size]))
                pos += size
            else:
                pos = _skip(data, pos, wire)
    except (IndexError, struct.error, ValueError) as err:
        raise DeployError(f"{path}: not a SentencePiece model ({err})") from None
    if not pieces:
        raise DeployError(f"{path}: holds no SentencePiece pieces")
    return pieces


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(data, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    if wire == 2:
        size, pos = _varint(data, pos)
        return pos + size
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _piece(data: bytes) -> tuple[bytes, float, int]:
    piece, score, kind, pos = b"", 0.0, _NORMAL, 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            size, pos = _varint(data, pos)
            piece, pos = data[pos : pos + size], pos + size
        elif field == 2 and wire == 5:
            (score,) = struct.unpack("<f", data[pos : pos + 4])
            pos += 4
        elif field == 3 and wire == 0:
            kind, pos = _varint(data, pos)
        else:
            pos = _skip(data, pos, wire)
    return piece, score, kind


def llama_tokens(config: PhiConfig, tokenizer_dir: Path) -> tuple[list[bytes], list[float], list[int]]:
    """(tokens, scores, types) of a Phi-3 SentencePiece vocabulary plus its added tokens, padded to the vocab."""
    model_file = tokenizer_dir / "tokenizer.model"
    if not model_file.is_file():
        raise DeployError(
            f"{tokenizer_dir}: no tokenizer.model; a Phi-3 GGUF takes its token scores from the "
            f"SentencePiece model (llama.cpp's converter needs it too): put the base model's "
            f"tokenizer.model there"
        )
    size = config.vocab_size
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores, types = [-10000.0] * size, [_UNUSED] * size
    for i, (piece, score, kind) in enumerate(sentencepiece_pieces(model_file)[:size]):
        tokens[i], scores[i] = piece, score
        # Only these SentencePiece kinds carry over; user-defined pieces count as normal ones.
        types[i] = kind if kind in (_UNKNOWN, _CONTROL, _UNUSED, _BYTE) else _NORMAL

    def put(token_id: int, content: str, special: bool | None) -> None:
        if 0 <= token_id < size:
            tokens[token_id], scores[token_id] = content.encode("utf-8"), -1000.0
            types[token_id] = _CONTROL if special else _USER_DEFINED

    for content, token_id in _read_json(tokenizer_dir / "added_tokens.json").items():
        put(int(token_id), content, None)
    decoder = _read_json(tokenizer_dir / "tokenizer_config.json").get("added_tokens_decoder", {})
    for token_id, info in decoder.items():
        put(int(token_id), info["content"], info.get("special"))
    for info in _read_json(tokenizer_dir / "tokenizer.json").get("added_tokens", []):
        put(int(info["id"]), info["content"], info.get("special"))
    return tokens, scores, types
