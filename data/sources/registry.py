"""Resolving a source name (named hub dataset, bundled sample, or local file) to parsed data."""

from __future__ import annotations

from pathlib import Path

from philora.data.errors import DataError
from philora.data.sources import oasst1, roleplay, tweetsumm
from philora.data.sources.base import SourceData
from philora.data.sources.hub_dataset import load_hub_dataset, looks_like_repo_id
from philora.data.sources.local_files import load_local

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
NAMED_SOURCES = ("roleplay", "tweetsumm", "oasst1")
SAMPLE_FILES = {
    "messages": "local/messages.jsonl",
    "prompt_completion": "local/prompt_completion.jsonl",
    "alpaca": "local/alpaca.json",
    "sharegpt": "local/sharegpt.json",
    "text": "local/text.jsonl",
}
SAMPLE_NAMES = NAMED_SOURCES + tuple(SAMPLE_FILES)
# Options each source accepts besides the common ones of data.prepare.
SOURCE_OPTIONS = {
    "roleplay": {"revision"},
    "tweetsumm": {"revision", "max_files"},
    "oasst1": {"revision", "lang"},
    "local": {"shape", "columns"},
    "hub": {"shape", "columns", "split", "subset", "revision"},
}


def _fetch(repo_id: str, filename: str, revision: str | None, required: bool = True) -> Path | None:
    from phi_models.hub import HubError, fetch_file

    try:
        return fetch_file(repo_id, filename, repo_type="dataset", revision=revision, required=required)
    except HubError as err:
        raise DataError(str(err)) from None


def _tweetsumm_files(fetch, split: str, max_files: int) -> list[Path]:
    # The split folder holds dialogues_1.json, dialogues_2.json, ...; the first must exist.
    files = []
    for number in range(1, max_files + 1):
        path = fetch(f"{tweetsumm.FOLDER}/{split}/dialogues_{number}.json", number == 1)
        if path is None:
            break
        files.append(path)
    return files


def _load_named(kind: str, fetch, options: dict, name: str) -> SourceData:
    if kind == "roleplay":
        return roleplay.load_roleplay([fetch(f, True) for f in roleplay.FILES], name=name)
    if kind == "tweetsumm":
        max_files = int(options.get("max_files", 50))
        return tweetsumm.load_tweetsumm(
            _tweetsumm_files(fetch, "train", max_files), _tweetsumm_files(fetch, "val", max_files), name=name
        )
    return oasst1.load_oasst1(
        [fetch(oasst1.TRAIN_FILE, True)], [fetch(oasst1.VAL_FILE, True)], lang=options.get("lang", "en"), name=name
    )


def _check_options(kind: str, options: dict) -> None:
    allowed = SOURCE_OPTIONS.get(kind if kind in SOURCE_OPTIONS else "local", set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DataError(f"source '{kind}' does not take option(s) {unknown}; it accepts {sorted(allowed) or 'none'}")


def load_source(source: str | Path, **options) -> SourceData:
    """Parse ``source``: ``roleplay``/``tweetsumm``/``oasst1`` (from the hub), ``samples/<name>``
    (bundled, offline), a local JSONL/JSON/parquet/CSV/TSV file, or any hub dataset repo ``owner/name``
    (options ``split``, ``subset``, ``revision``). ``shape`` forces a record shape and ``columns``
    (``prompt=question,completion=answer``) renames columns first, for files and hub repos."""
    text = str(source)
    options = {k: v for k, v in options.items() if v is not None}
    if text in NAMED_SOURCES:
        _check_options(text, options)
        repo = {"roleplay": roleplay.REPO_ID, "tweetsumm": tweetsumm.REPO_ID, "oasst1": oasst1.REPO_ID}[text]
        revision = options.get("revision")
        return _load_named(text, lambda f, required: _fetch(repo, f, revision, required), options, text)
    if text.startswith("samples/") and not Path(text).exists():
        sample = text.split("/", 1)[1]
        if sample in NAMED_SOURCES:
            _check_options(sample, {k: v for k, v in options.items() if k != "revision"})
            root = SAMPLES_DIR / sample

            def local(filename, required):
                path = root / filename
                return path if path.is_file() else (None if not required else _missing(path))

            return _load_named(sample, local, options, text)
        if sample in SAMPLE_FILES:
            _check_options("local", options)
            return load_local(
                SAMPLES_DIR / SAMPLE_FILES[sample],
                shape=options.get("shape"),
                columns=options.get("columns"),
                name=text,
            )
        raise DataError(f"unknown bundled sample {text!r}; use one of {['samples/' + s for s in SAMPLE_NAMES]}")
    path = Path(text).expanduser()
    if not path.exists() and looks_like_repo_id(text) and not text.startswith("samples/"):
        _check_options("hub", options)
        return load_hub_dataset(text, **options)
    if not path.exists():
        raise DataError(
            f"unknown data source {text!r}: not a named source {list(NAMED_SOURCES)}, "
            f"not a bundled sample {['samples/' + s for s in SAMPLE_NAMES]}, no such file, "
            f"and not a hub dataset id (owner/name)"
        )
    _check_options("local", options)
    return load_local(path, shape=options.get("shape"), columns=options.get("columns"))


def _missing(path: Path):
    raise DataError(
        f"{path}: bundled sample file is missing; regenerate with python -m philora.data.samples.make_samples"
    )
