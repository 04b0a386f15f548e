"""Reading raw records from JSONL, JSON, parquet, CSV and TSV files, each tagged with where it came from."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from philora.data.errors import DataError
from philora.data.limits import MAX_EXPANSION, MAX_JSON_FILE_BYTES, MAX_LINE_CHARS, PARQUET_BATCH_ROWS, expansion_limit

SUFFIXES = (
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "json"),
    (".parquet", "parquet"),
    (".csv", "csv"),
    (".tsv", "tsv"),
)


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
    so that later errors can point at the exact record. Unreadable, non-UTF-8, too deeply nested
    or oversized input is a DataError naming the file (and line); see ``data.limits`` for the bounds.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass a .jsonl, .json or .parquet file or a named source")
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; pass an existing .jsonl, .json, .parquet, .csv or .tsv file or a named source"
        )
    fmt = file_format(path)
    try:
        if fmt == "jsonl":
            yield from _read_jsonl(path)
        elif fmt == "json":
            yield from _read_json(path)
        elif fmt in ("csv", "tsv"):
            yield from _read_delimited(path, "," if fmt == "csv" else "\t")
        else:
            yield from _read_parquet(path)
    except UnicodeDecodeError as err:  # CSV/TSV are decoded as they are read
        raise DataError(f"{path}: not UTF-8 text (byte {err.start} of a read block); save the file as UTF-8") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None


def _parse_json(text: str, where: str, document: bool = False):
    """json.loads with every way it can fail as one DataError naming ``where`` (and the line of a document)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if document:
            raise DataError(f"{where}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        raise DataError(f"{where}: malformed JSON ({err.msg} at column {err.colno}); fix or remove the line") from None
    except ValueError as err:  # an integer beyond Python's digit limit
        raise DataError(f"{where}: unusable JSON ({str(err).splitlines()[0][:120]})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to be a record") from None


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as handle:
        number = 0
        while True:
            number += 1
            where = f"{path}:{number}"
            try:
                line = handle.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{where}: not UTF-8 text (byte {err.start} of a read block); save the file as UTF-8"
                ) from None
            if not line:
                return
            if len(line) > MAX_LINE_CHARS:
                raise DataError(f"{where}: line longer than {MAX_LINE_CHARS:,} characters; split the record")
            if not line.strip():
                continue
            record = _parse_json(line, where)
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
            yield where, record


def _read_json(path: Path) -> Iterator[tuple[str, dict]]:
    size = path.stat().st_size
    if size > MAX_JSON_FILE_BYTES:
        raise DataError(f"{path}: {size:,} bytes is too large for one JSON document; use JSONL (one record per line)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    data = _parse_json(text, str(path), document=True)
    del text
    if isinstance(data, dict):
        # A dict of records keyed by id (DialogStudio) or {"data": [...]}-style wrappers.
        list_values = [v for v in data.values() if isinstance(v, list)]
        if all(isinstance(v, dict) for v in data.values()):
            items = [(f"{path} record {key!r}", value) for key, value in data.items()]
        elif len(list_values) == 1 and all(isinstance(r, dict) for r in list_values[0]):
            items = [(f"{path} record {i}", r) for i, r in enumerate(list_values[0])]
        else:
            raise DataError(
                f"{path}: expected a JSON list of records or a dict of records; "
                f"found a dict with keys {sorted(data)[:8]}"
            )
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
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(record[None]) + len(reader.fieldnames)} cells "
                        f"but the header names {len(reader.fieldnames)} columns; quote cells that "
                        f"contain the delimiter"
                    )
                if not any((value or "").strip() for value in record.values()):
                    continue
                yield f"{path}:{reader.line_num}", {k: (v if v is not None else "") for k, v in record.items()}
        except csv.Error as err:
            kind = "CSV" if delimiter == "," else "TSV"
            raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({err})") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    stored = path.stat().st_size
    limit = expansion_limit(stored)
    try:
        parquet = pq.ParquetFile(path)
        meta = parquet.metadata
        encoded = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
    except Exception as err:  # pyarrow raises several types for damaged files
        raise DataError(f"{path}: not a readable parquet file ({str(err)[:200]})") from None
    if encoded > limit:
        raise _bomb(path, encoded, stored)
    decoded, index = 0, 0
    try:
        batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
        for batch in batches:
            records = batch.to_pylist()
            # Measured on the Python values: a dictionary-typed batch reports only its indices in nbytes.
            decoded += sum(_decoded_size(record) for record in records)
            if decoded > limit:  # repetition (dictionary/RLE pages) decodes to far more than is stored
                raise _bomb(path, decoded, stored)
            for record in records:
                yield f"{path} row {index}", record
                index += 1
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: not a readable parquet file ({str(err)[:200]})") from None


def _decoded_size(value) -> int:
    """Rough bytes a decoded parquet value holds: its strings' lengths, 8 for any other scalar."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        return sum(_decoded_size(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_decoded_size(v) for v in value)
    return 8


def _bomb(path: Path, decoded: int, stored: int) -> DataError:
    return DataError(
        f"{path}: {stored:,} bytes on disk decode to more than {decoded:,} bytes (over "
        f"{MAX_EXPANSION}x); refusing a likely compression bomb; re-save the data uncompressed "
        f"or as JSONL if it is genuine"
    )


def require_fields(record: dict, fields: tuple[str, ...], where: str) -> None:
    """Raise one line naming the missing fields and the fields the record does have."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; the record has {sorted(record)}")
