"""philora generate / chat through the CLI on tiny with an adapter from a short run."""

from __future__ import annotations

import json

import pytest

import phi_models
from philora.commands.chat import Conversation
from philora.inference import load_inference_model
from philora.prompting import render_prompt
from tests.philora.conftest import run_cli

TOKENS = 10


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_inference_model(str(tiny_run))


def _reference(loaded, messages, max_new_tokens=TOKENS) -> str:
    ids = loaded.tokenizer.encode(render_prompt(loaded.template, messages, loaded.tokenizer))
    pieces = []
    phi_models.generate(
        loaded.model,
        [ids],
        max_new_tokens=max_new_tokens,
        stop_ids=loaded.stop_ids,
        stop_strings=loaded.stop_strings,
        tokenizer=loaded.tokenizer,
        on_text=lambda row, text: pieces.append(text),
    )
    return "".join(pieces)


def test_run_loads_with_its_adapter_and_template(tiny_run, loaded):
    base = load_inference_model("tiny")
    assert loaded.template == "phi3" and loaded.run is None or loaded.run.path == tiny_run
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    assert _reference(loaded, messages) != _reference(base, messages)  # the adapter is applied


def test_generate_prompt_and_jsonl_batches(tiny_run, loaded, tmp_path):
    done = run_cli(
        "generate",
        str(tiny_run),
        "--prompt",
        "Tell me about the sea.",
        "--max-new-tokens",
        str(TOKENS),
        "--system",
        "You are a sailor.",
    )
    assert done.returncode == 0, done.stderr
    system = {"role": "system", "content": "You are a sailor."}
    assert done.stdout == _reference(loaded, [system, {"role": "user", "content": "Tell me about the sea."}]) + "\n"

    prompts = ["Hello!", "What is the weather like in a storm at sea?", "Name a fish."]
    lines = [
        {"prompt": prompts[0], "id": 1},
        {"prompt": prompts[1]},
        {"messages": [{"role": "user", "content": prompts[2]}]},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    done = run_cli(
        "generate",
        str(tiny_run),
        "--prompt-file",
        str(src),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--max-new-tokens",
        str(TOKENS),
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a.get("id") for a in answers] == [1, None, None]
    for prompt, answer in zip(prompts, answers):  # batched greedy == each prompt alone
        assert answer["completion"] == _reference(loaded, [{"role": "user", "content": prompt}])
        assert answer["finish_reason"] in ("stop", "length") and 0 < answer["completion_tokens"] <= TOKENS


def test_chat_over_stdin_keeps_history_and_system(tiny_run, loaded):
    script = "Hi there\n/system You are a pirate.\nWho are you?\nWhere is the ship?\n/reset\nWho are you?\n/exit\n"
    done = run_cli("chat", str(tiny_run), "--max-new-tokens", str(TOKENS), stdin=script)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.split("\n")[:4]
    pirate = {"role": "system", "content": "You are a pirate."}
    first = _reference(loaded, [{"role": "user", "content": "Hi there"}])
    second = _reference(loaded, [pirate, {"role": "user", "content": "Who are you?"}])
    third = _reference(
        loaded,
        [
            pirate,
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": second},
            {"role": "user", "content": "Where is the ship?"},
        ],
    )
    assert replies == [first, second, third, second]  # /reset keeps the persona, forgets the turns
    assert "system prompt set" in done.stderr and "conversation reset" in done.stderr


def test_chat_drops_oldest_turns_when_context_overflows(loaded, capsys):
    system = [{"role": "system", "content": "Be brief."}]
    full = system + [
        {"role": "user", "content": "one two three four five six"},
        {"role": "assistant", "content": "seven eight nine ten eleven twelve"},
        {"role": "user", "content": "thirteen fourteen"},
    ]
    longest = len(loaded.tokenizer.encode(render_prompt(loaded.template, full)))
    # Room for the last message alone, not for the whole conversation.
    chat = Conversation(loaded, "Be brief.", reply_budget=loaded.context_length - longest + 1)
    first = chat.prompt_ids("one two three four five six")
    chat.add_reply("seven eight nine ten eleven twelve")
    second = chat.prompt_ids("thirteen fourteen")
    assert first is not None and second is not None
    assert [m["content"] for m in chat.turns] == ["thirteen fourteen"]
    assert "dropped the oldest exchange" in capsys.readouterr().err
    chat.add_reply("fifteen")
    before = list(chat.turns)
    assert chat.prompt_ids("word " * 100) is None and chat.turns == before  # too long alone: history kept


@pytest.mark.parametrize("argv, message", [
    (["generate", "tiny", "--prompt", "x", "--top-p", "1.5"], "top_p must be"),
    (["generate", "tiny", "--prompt-file", "missing.jsonl", "--out", "o.jsonl"], "missing.jsonl: no such file"),
    (["generate", "tiny", "--prompt-file", "x.jsonl"], "needs --out"),
    (["chat", "no/such/run", "--temperature", "0"], "no/such/run"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    from philora.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_generate_merged_export_peft_adapter_and_nf4_base(tiny_run, tiny_hf_dir, capsys):
    from philora.cli import main

    common = ["--prompt", "Hello there", "--max-new-tokens", "6"]
    assert main(["generate", "tiny", *common]) == 0
    base = capsys.readouterr().out
    assert main(["generate", str(tiny_hf_dir), *common]) == 0  # a merged export (here of the bare base)
    assert capsys.readouterr().out == base
    assert main(["generate", str(tiny_run), *common]) == 0
    with_run = capsys.readouterr().out
    assert main(["generate", "tiny", "--adapter", str(tiny_run / "peft"), *common]) == 0  # the run's PEFT copy
    assert capsys.readouterr().out == with_run != base
    assert main(["generate", str(tiny_run), "--quantize", "nf4", *common]) == 0
    quantized = capsys.readouterr().out
    assert quantized.strip() and quantized.endswith("\n")
