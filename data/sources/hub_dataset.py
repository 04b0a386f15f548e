"""Any dataset repository on the hub (``--data user/dataset``): its parquet/JSON/CSV files, split by name.

Files are picked as the hub's dataset viewer does without a loading script: data files anywhere in
the repo, a split named by a path component or file-name word (``train``, ``validation``/``valid``/
``val``/``dev``, ``test``); files naming no split are ``train``. ``subset`` keeps the files under a
folder (or with a name prefix) of that name. Each file is fetched through ``phi_models.hub`` (cache,
offline mode) and parsed with the local-file shape detection. No code from the repo is run.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from philora.data.errors import DataError
from philora.data.sources.base import SourceData
from philora.data.sources.local_files import parse_records
from philora.data.sources.records import SUFFIXES, read_records

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "validation",
}
NOT_DATA = {"dataset_info.json", "dataset_infos.json", "config.json", "package.json", "tokenizer.json"}


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` without a file suffix (a path that does not exist is not a repo id if it has one)."""
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(re.fullmatch(r"[\w.-]+", p) for p in parts)
        and not any(text.lower().endswith(suffix) for suffix, _ in SUFFIXES)
    )


def split_of(path: str) -> str:
    """The split a data file belongs to, from its folders and the words of its name."""
    pure = PurePosixPath(path)
    words = [part.lower() for part in pure.parts[:-1]]
    words += re.split(r"[-_.\s]+", pure.name.lower())
    for word in words:
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "train"


def data_files(files: list[str], subset: str | None) -> list[str]:
    """The repo's data files (known suffixes, no hidden folders or metadata), optionally of one subset."""
    picked = []
    for path in files:
        pure = PurePosixPath(path)
        if any(part.startswith(".") for part in pure.parts) or pure.name.lower() in NOT_DATA:
            continue
        if not any(pure.name.lower().endswith(suffix) for suffix, _ in SUFFIXES):
            continue
        if subset is not None and subset not in pure.parts[:-1] and not pure.name.startswith(subset):
            continue
        picked.append(path)
    return sorted(picked)


def load_hub_dataset(
    repo_id: str,
    *,
    split: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
    shape: str | None = None,
    columns=None,
) -> SourceData:
    """Parse the ``split`` (default train) of hub dataset ``repo_id``; its validation split, if any, is ``val``."""
    from phi_models.hub import HubError, fetch_file, list_repo_files

    try:
        files = data_files(list_repo_files(repo_id, repo_type="dataset", revision=revision), subset)
    except HubError as err:
        raise DataError(str(err)) from None
    if not files:
        which = f" for subset {subset!r}" if subset else ""
        raise DataError(
            f"dataset repo '{repo_id}' has no .parquet/.jsonl/.json/.csv/.tsv data files{which}; "
            f"(datasets built by a loading script cannot be read: pass a local export with --data)"
        )
    by_split: dict[str, list[str]] = {}
    for path in files:
        by_split.setdefault(split_of(path), []).append(path)
    wanted = split or "train"
    if wanted not in by_split:
        raise DataError(
            f"dataset repo '{repo_id}' has no split {wanted!r}; its splits are {sorted(by_split)} (pass --split)"
        )

    def read(paths: list[str]):
        for path in paths:
            try:
                local = fetch_file(repo_id, path, repo_type="dataset", revision=revision)
            except HubError as err:
                raise DataError(str(err)) from None
            for where, record in read_records(local):
                yield where.replace(str(local), f"{repo_id}/{path}"), record

    train, kind = parse_records(read(by_split[wanted]), shape=shape, columns=columns)
    if kind is None:
        raise DataError(f"dataset repo '{repo_id}': the {wanted} split holds no records")
    val = None
    if wanted == "train" and "validation" in by_split:
        val, _ = parse_records(read(by_split["validation"]), shape=kind, columns=columns)
    return SourceData(
        name=repo_id,
        kind=kind,
        train=train,
        val=val,
        records=len(train) + (len(val) if val else 0),
    )
