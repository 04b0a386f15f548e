"""Hostile and careless data files: one DataError each (never a traceback), bounded memory and time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from phi_models import Segment
from philora.data import prepare
from philora.data.errors import DataError
from philora.data.limits import text_char_budget
from philora.data.tokenize import tokenize_segments
from tests.data.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[2]
GOOD = {"prompt": "What is two plus two?", "completion": "Four."}


def _jsonl_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# (file name, content bytes, words the error must contain)
MALFORMED = {
    "jsonl-not-utf8": (
        "d.jsonl",
        json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xff\xfe", "completion": "x"}\n',
        ["d.jsonl", "UTF-8"],
    ),
    "jsonl-deep-nesting": (
        "d.jsonl",
        b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "completion": "x"}\n',
        ["d.jsonl:1", "nested too deeply"],
    ),
    "jsonl-huge-integer": (
        "d.jsonl",
        b'{"prompt": "a", "completion": "b", "n": ' + b"9" * 10_000 + b"}\n",
        ["d.jsonl:1", "unusable JSON"],
    ),
    "jsonl-not-an-object": ("d.jsonl", b"[1, 2, 3]\n", ["d.jsonl:1", "JSON object"]),
    "jsonl-broken": ("d.jsonl", b'{"prompt": "a", \n', ["d.jsonl:1", "malformed JSON"]),
    "jsonl-wrong-type": ("d.jsonl", b'{"prompt": 5, "completion": ["x"]}\n', ["d.jsonl:1", "must be a string"]),
    "json-not-utf8": ("d.json", b'[{"prompt": "\xc3\x28", "completion": "x"}]', ["d.json", "UTF-8"]),
    "json-deep-nesting": ("d.json", b"[" * 100_000 + b"]" * 100_000, ["d.json", "nested too deeply"]),
    "json-huge-integer": (
        "d.json",
        b'[{"prompt": "a", "completion": "b", "n": ' + b"1" * 10_000 + b"}]",
        ["d.json", "unusable JSON"],
    ),
    "json-scalar": ("d.json", b"42", ["d.json", "expected a JSON list"]),
    "parquet-garbage": ("d.parquet", b"PAR1" + os.urandom(256) + b"PAR1", ["d.parquet", "not a readable parquet"]),
    "parquet-empty": ("d.parquet", b"", ["d.parquet", "not a readable parquet"]),
    "csv-not-utf8": ("d.csv", b"prompt,completion\na,\xff\xfe\n", ["d.csv", "UTF-8"]),
    "csv-huge-cell": ("d.csv", b"prompt,completion\na," + b"x" * 200_000 + b"\n", ["d.csv", "malformed CSV"]),
    "unknown-suffix": ("d.txt", b"prompt,completion\na,b\n", ["d.txt", "unknown file type"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED), ids=sorted(MALFORMED))
def test_malformed_data_file_is_one_data_error(tmp_path, tiny_tok, case):
    name, content, words = MALFORMED[case]
    path = _jsonl_bytes(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        prepare(str(path), tiny_tok, max_seq_len=64, val_fraction=0)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_directory_given_as_data_file(tmp_path, tiny_tok):
    folder = tmp_path / "train.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        prepare(str(folder), tiny_tok, max_seq_len=64)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_data_file(tmp_path, tiny_tok):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    path.chmod(0)
    with pytest.raises(DataError, match="cannot be read"):
        prepare(str(path), tiny_tok, max_seq_len=64)


def test_huge_record_is_cut_before_tokenizing_with_the_same_tokens(tiny_tok):
    # The budget cuts only text the model would never see: the kept tokens equal those of the whole text.
    prompt, reply = "Say many words. ", " ".join(f"w{i % 97}" for i in range(40_000))
    assert len(prompt + reply) > text_char_budget(tiny_tok, 64)
    result = tokenize_segments([Segment(prompt, False), Segment(reply, True)], tiny_tok, max_seq_len=64)
    whole = tiny_tok.backend.encode(prompt + reply, add_special_tokens=False).ids
    assert result.truncated
    assert result.example.input_ids == whole[:64]
    assert result.example.targets[-1] == whole[64]


_RSS_SCRIPT = textwrap.dedent("""
    import sys, time
    started = time.monotonic()
    import phi_models
    from philora import data
    tok = phi_models.load_tokenizer("tiny")
    try:
        prepared = data.prepare(sys.argv[1], tok, max_seq_len=256, val_fraction=0)
        outcome = f"ok {len(prepared.train)} truncated={prepared.report.truncated}"
    except data.DataError as err:
        outcome = f"DataError {err}"
    hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    print(outcome)
    print(f"VmHWM_kB {hwm} seconds {time.monotonic() - started:.1f}")
""")
RSS_BOUND_KB = 1_000_000  # python + torch + tokenizers start near 300 MB; before the bounds: 10.8 GB for the line


def _measure(path: Path) -> tuple[str, int, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome, stats = proc.stdout.strip().splitlines()[-2:]
    _, hwm, _, seconds = stats.split()
    return outcome, int(hwm), float(seconds)


def test_50mb_json_line_has_bounded_memory_and_time(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps({"prompt": "Repeat.", "completion": "word " * 10_000_000}) + "\n")  # 50 MB
        handle.write(json.dumps(GOOD) + "\n")
    outcome, hwm, seconds = _measure(path)
    assert outcome == "ok 2 truncated=1"
    assert hwm < RSS_BOUND_KB, f"peak RSS {hwm} kB"
    assert seconds < 120  # was 145 s when the whole line was tokenized (loaded shared machine: generous)


def test_parquet_compression_bomb_is_refused_with_bounded_memory(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 1_000_000  # one 400-character string, dictionary-encoded: ~90 KB on disk, 800 MB decoded
    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["x" * 400]))
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"prompt": column, "completion": column}), path, compression="zstd")
    assert path.stat().st_size < 200_000
    outcome, hwm, _ = _measure(path)
    assert outcome.startswith("DataError") and "compression bomb" in outcome, outcome
    assert hwm < RSS_BOUND_KB, f"peak RSS {hwm} kB"


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda tok: prepare("samples/roleplay", 5), "phi_models.PhiTokenizer"),
        (lambda tok: prepare("samples/roleplay", tok, max_seq_len="64"), "max_seq_len must be an integer"),
        (lambda tok: prepare("samples/roleplay", tok, val_fraction="x"), "val_fraction must be a number"),
        (lambda tok: prepare("samples/roleplay", tok, limit=2.5), "limit must be an integer"),
        (
            lambda tok: __import__("philora.data", fromlist=["make_batches"]).make_batches(
                None, batch_size=2, max_seq_len=8, pad_id=0
            ),
            "list of data.Example",
        ),
        (
            lambda tok: __import__("philora.data", fromlist=["make_batches"]).make_batches(
                [], batch_size="2", max_seq_len=8, pad_id=0
            ),
            "batch_size",
        ),
    ],
    ids=["tokenizer-int", "max-seq-len-str", "val-fraction-str", "limit-float", "examples-none", "batch-size-str"],
)
def test_wrong_argument_types_are_data_errors(tiny_tok, call, words):
    with pytest.raises(DataError, match=words):
        call(tiny_tok)
