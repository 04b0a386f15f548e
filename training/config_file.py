"""Reading a ``--config`` file safely: bounded size, nesting and alias expansion, UTF-8 only, no key twice.

A YAML alias bomb is refused before it is expanded (it would otherwise be materialized when a value is
printed), and deep nesting before it exhausts Python's recursion limit inside the parsers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from philora.training.errors import TrainingError

MAX_CONFIG_BYTES = 1 << 20  # an options file is a few hundred bytes; a megabyte is generous
MAX_DEPTH = 32
MAX_EXPANDED_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader bounding nesting and alias expansion, and refusing a key given twice in one mapping."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        # Aliases share nodes, so the graph is small while its expansion can be exponential (an alias
        # bomb): count the expanded size, memoized per node, before anything is constructed.
        sizes: dict[int, int] = {}

        def expanded(n) -> int:
            if id(n) not in sizes:
                children = (
                    n.value
                    if isinstance(n, yaml.SequenceNode)
                    else [x for pair in n.value for x in pair]
                    if isinstance(n, yaml.MappingNode)
                    else []
                )
                sizes[id(n)] = min(1 + sum(expanded(c) for c in children), MAX_EXPANDED_NODES + 1)
            return sizes[id(n)]

        if node is not None and expanded(node) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?)",
                node.start_mark,
            )
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise TrainingError(f"key {key!r} appears twice")
        out[key] = value
    return out


def read_options_file(path: str) -> Any:
    """The parsed content of YAML/JSON file ``path`` (any shape; the caller checks it is a mapping)."""
    p = Path(path)
    kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
    if p.is_dir():
        raise TrainingError(f"--config {path}: is a directory; pass a YAML or JSON file")
    if not p.is_file():
        raise TrainingError(f"--config {path}: no such file")
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise TrainingError(
                f"--config {path}: {p.stat().st_size:,} bytes is too large for an options file "
                f"(at most {MAX_CONFIG_BYTES:,})"
            )
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise TrainingError(f"--config {path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise TrainingError(f"--config {path}: cannot be read ({err.strerror})") from None
    try:
        if kind == "JSON":
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except TrainingError as err:
        raise TrainingError(f"--config {path}: {err}") from None
    except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError and too-long integers are ValueErrors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TrainingError(f"--config {path}: not valid {kind}: {first[:200]}") from None
    except RecursionError:
        raise TrainingError(f"--config {path}: nested too deeply to be an options file") from None
