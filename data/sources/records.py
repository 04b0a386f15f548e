"""Reading raw records from JSONL, JSON, parquet, CSV and TSV files, each tagged with where it came from."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from ..errors import DataError

FORMATS = ("jsonl", "json", "parquet", "csv", "tsv")
SUFFIXES = ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"),
            (".csv", "csv"), (".tsv", "tsv"))


def file_format(path: Path) -> str:
    """Guess the container format from the file name."""
    name = path.name.lower()
    for suffix, fmt in SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{path}: unknown file type; use a .jsonl, .json, .parquet, .csv or .tsv file")


def read_records(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(origin, record)`` for every record of a local file.

    ``origin`` is ``file:line`` for JSONL and ``file record N`` / ``file row N`` otherwise,
    so that later errors can point at the exact record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass an existing .jsonl, .json, .parquet, .csv or .tsv file "
                        f"or a named source")
    fmt = file_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path)
    elif fmt == "json":
        yield from _read_json(path)
    elif fmt in ("csv", "tsv"):
        yield from _read_delimited(path, "," if fmt == "csv" else "\t")
    else:
        yield from _read_parquet(path)


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg} at column {err.colno}); fix or remove the line") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
            yield where, record


def _read_json(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    if isinstance(data, dict):
        # A dict of records keyed by id (DialogStudio) or {"data": [...]}-style wrappers.
        list_values = [v for v in data.values() if isinstance(v, list)]
        if all(isinstance(v, dict) for v in data.values()):
            items = [(f"{path} record {key!r}", value) for key, value in data.items()]
        elif len(list_values) == 1 and all(isinstance(r, dict) for r in list_values[0]):
            items = [(f"{path} record {i}", r) for i, r in enumerate(list_values[0])]
        else:
            raise DataError(f"{path}: expected a JSON list of records or a dict of records; "
                            f"found a dict with keys {sorted(data)[:8]}")
    elif isinstance(data, list):
        items = [(f"{path} record {i}", r) for i, r in enumerate(data)]
    else:
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for where, record in items:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[str, dict]]:
    # The first row names the columns; every value is a string (empty cells are "").
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            if not reader.fieldnames:
                return
            for record in reader:
                if None in record:  # more cells than header names
                    raise DataError(f"{path}:{reader.line_num}: {len(record[None]) + len(reader.fieldnames)} cells "
                                    f"but the header names {len(reader.fieldnames)} columns; quote cells that "
                                    f"contain the delimiter")
                if not any((value or "").strip() for value in record.values()):
                    continue
                yield f"{path}:{reader.line_num}", {k: (v if v is not None else "") for k, v in record.items()}
        except csv.Error as err:
            kind = "CSV" if delimiter == "," else "TSV"
            raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({err})") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for damaged files
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    for index, record in enumerate(table.to_pylist()):
        yield f"{path} row {index}", record


def require_fields(record: dict, fields: tuple[str, ...], where: str) -> None:
    """Raise one line naming the missing fields and the fields the record does have."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; the record has {sorted(record)}")
