"""Reading a model's small JSON files (config, tokenizer settings, shard index) with one error class.

Non-UTF-8 bytes, unreadable files, integers too long to parse, nesting deep enough to exhaust the
parser's recursion and files far larger than any real one all become a one-line PhiModelError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phi_models.errors import PhiModelError

MAX_JSON_BYTES = 256 << 20  # the largest real ones (tokenizer files) are a few tens of MB


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse JSON file ``path``; any problem is a PhiModelError naming the file and what to do."""
    path = Path(path)
    try:
        if path.is_dir():
            raise PhiModelError(f"{path}: is a directory; expected a {what}")
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise PhiModelError(f"{path}: {size:,} bytes is too large for a {what} (at most {MAX_JSON_BYTES:,})")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PhiModelError(f"{path}: not found; expected a {what}") from None
    except UnicodeDecodeError as err:
        raise PhiModelError(f"{path}: not UTF-8 text (byte {err.start}); a {what} must be UTF-8 JSON") from None
    except OSError as err:
        raise PhiModelError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PhiModelError(f"{path}: not valid JSON ({err})") from None
    except ValueError as err:  # e.g. an integer longer than Python's digit limit
        raise PhiModelError(f"{path}: not a usable {what} ({str(err).splitlines()[0][:160]})") from None
    except RecursionError:
        raise PhiModelError(f"{path}: nested too deeply to be a {what}") from None
