"""``philora serve`` as a command: binds 127.0.0.1, prints where, answers, stops on SIGINT; one-line errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (test extra) is not installed")

from tests.philora.conftest import REPO  # noqa: E402


def test_serve_command_answers_and_stops(tiny_run):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "philora", "serve", str(tiny_run), "--port", "0", "--api-key", "k", "--max-tokens", "4"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{match.group(1)}/v1", api_key="k", max_retries=0)
        # The base under its model name, the run's adapter under the run directory's name.
        assert [m.id for m in client.models.list().data] == ["tiny", tiny_run.name]
        reply = client.chat.completions.create(
            model=tiny_run.name, messages=[{"role": "user", "content": "Hi"}], temperature=0
        )
        assert reply.usage.completion_tokens <= 4 and reply.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("argv, message", [
    (["serve", "tiny", "--adapter", "nameonly"], "write NAME=PATH"),
    (["serve", "tiny", "--adapter", "bad name=x"], "letters, digits"),
    (["serve", "tiny", "--max-batch", "0"], "--max-batch must be >= 1"),
    (["serve", "tiny", "--adapter", "a=/no/such/file.safetensors"], "/no/such/file.safetensors"),
])  # fmt: skip
def test_serve_bad_options_one_line_exit_2(argv, message, capsys):
    from philora.cli import main

    assert main([*argv, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
