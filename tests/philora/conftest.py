"""A tiny training run shared by the philora tests (trained once per session, in-process)."""

from __future__ import annotations

import pytest

TRAIN_ARGS = [
    "--model",
    "tiny",
    "--data",
    "samples/roleplay",
    "--limit",
    "16",
    "--max-seq-len",
    "64",
    "--batch-size",
    "2",
    "--max-steps",
    "3",
    "--lr",
    "1e-2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
    "--eval-batches",
    "1",
    "--save-every",
    "0",
    "--targets",
    "q_proj,v_proj,dense,fc1",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The output directory of a finished 3-step LoRA run on the tiny model."""
    from philora.training.run import main

    out = tmp_path_factory.mktemp("runs") / "tiny-roleplay"
    assert main([*TRAIN_ARGS, "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """The tiny base model as a Hugging Face checkpoint (transformers loads it), written by export_merged."""
    import phi_models

    out = tmp_path_factory.mktemp("hf") / "tiny"
    phi_models.export_merged(phi_models.from_pretrained("tiny"), out, base_model="tiny")
    return out


# ---- helpers of the inference command tests -------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m philora ARGS`` from the repo root, text in and out."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "philora", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
