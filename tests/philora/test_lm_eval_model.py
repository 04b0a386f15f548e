"""The lm-evaluation-harness model: local tasks the test writes, run by ``philora lm-eval``, against our own logits."""

from __future__ import annotations

import json

import pytest
import torch

from philora.cli import main
from tests.philora.eval_run import trained_run_dir

pytest.importorskip("lm_eval", reason="lm-eval is in the lm-eval/test extras")

MC_DOCS = [
    {"question": "What is your name?", "choices": ["Master Chen", "a teapot", "slow water"], "label": 0},
    {"question": "What makes you happy?", "choices": ["tea leaves", "thunder"], "label": 0},
    {"question": "Farewell, friend!", "choices": ["Until we meet again.", "Good tea.", "No."], "label": 0},
]
GEN_DOCS = [
    {"question": "<|user|>\nWhat is your motto?<|end|>\n<|assistant|>\n", "answer": "Slow water makes good tea."},
    {"question": "Greetings", "answer": "friend"},
]
ROLLING_DOCS = [
    {"text": "Slow water makes good tea. I have lived by those words all my life."},
    {"text": "Greetings, friend!"},
]


def _write_tasks(folder) -> None:
    """Three tasks on local JSON files (no hub): multiple choice, generate_until and loglikelihood_rolling."""
    files = {"mc": MC_DOCS, "gen": GEN_DOCS, "rolling": ROLLING_DOCS}
    for name, docs in files.items():
        (folder / f"{name}.json").write_text(json.dumps(docs), encoding="utf-8")
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  cache_dir: {folder / 'hf-cache'}\n  data_files:\n"
        "    test: {file}\ntest_split: test\n"
    )
    (folder / "philora_mc.yaml").write_text(
        "task: philora_mc\n"
        + common.format(file=folder / "mc.json")
        + 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n',
        encoding="utf-8",
    )
    (folder / "philora_gen.yaml").write_text(
        "task: philora_gen\n"
        + common.format(file=folder / "gen.json")
        + 'output_type: generate_until\ndoc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["."]\n  max_gen_toks: 6\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n",
        encoding="utf-8",
    )
    (folder / "philora_rolling.yaml").write_text(
        "task: philora_rolling\n"
        + common.format(file=folder / "rolling.json")
        + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n",
        encoding="utf-8",
    )


def _samples(out_dir, task: str) -> list[dict]:
    (path,) = out_dir.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory):
    """``philora lm-eval --model philora`` over the three local tasks (batched, fp32, samples logged)."""
    run_dir = trained_run_dir()
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    _write_tasks(folder)
    out = folder / "out"
    code = main(
        [
            "lm-eval",
            "--model",
            "philora",
            "--model_args",
            f"pretrained={run_dir},precision=fp32",
            "--tasks",
            "philora_mc,philora_gen,philora_rolling",
            "--include_path",
            str(folder),
            "--batch_size",
            "4",
            "--device",
            "cpu",
            "--output_path",
            str(out),
            "--log_samples",
        ]
    )
    assert code == 0
    return run_dir, out


@pytest.fixture(scope="module")
def ours(harness_run):
    from philora.evaluation.target import load_target

    return load_target(str(harness_run[0]), precision="fp32")


def _direct_logprob(target, context_ids: list[int], continuation_ids: list[int]) -> float:
    """Sum of log p(continuation | context) from one full forward of our model (B=1, all logits)."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = target.model(ids)[0].float().log_softmax(-1)  # (T, V)
    start = len(context_ids)
    return float(sum(logprobs[start - 1 + i, token] for i, token in enumerate(continuation_ids)))


def test_multiple_choice_loglikelihoods_equal_our_logits(harness_run, ours):
    _, out = harness_run
    samples = _samples(out, "philora_mc")
    assert len(samples) == len(MC_DOCS)
    tok = ours.tokenizer
    checked = 0
    for sample in samples:
        for index, args in enumerate(sample["arguments"].values()):
            context, continuation = args["arg_0"], args["arg_1"]
            whole, context_ids = tok.encode(context + continuation), tok.encode(context)
            assert whole[: len(context_ids)] == context_ids  # the split lm_eval makes for causal models
            expected = _direct_logprob(ours, context_ids, whole[len(context_ids) :])
            assert float(sample["resps"][index][0][0]) == pytest.approx(expected, abs=1e-5)
            checked += 1
    assert checked == sum(len(d["choices"]) for d in MC_DOCS)


def test_loglikelihood_rolling_equals_our_logits(harness_run, ours):
    _, out = harness_run
    samples = _samples(out, "philora_rolling")
    tok = ours.tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    for sample in samples:
        ids = tok.encode(sample["doc"]["text"])
        assert float(sample["resps"][0][0]) == pytest.approx(_direct_logprob(ours, [prefix], ids), abs=1e-5)


def test_generate_until_equals_our_greedy_generation_cut_at_until(harness_run, ours):
    import phi_models

    _, out = harness_run
    samples = _samples(out, "philora_gen")
    assert len(samples) == len(GEN_DOCS)
    for sample in samples:
        context = sample["arguments"]["gen_args_0"]["arg_0"]
        (new_ids,) = phi_models.generate(
            ours.model, [ours.tokenizer.encode(context)], max_new_tokens=6, stop_ids=ours.tokenizer.stop_token_ids
        )
        expected = ours.tokenizer.decode(new_ids, skip_special_tokens=True).split(".")[0]
        assert sample["resps"][0][0] == expected


def test_rolling_windows_score_every_token_once_when_longer_than_the_context(harness_run):
    """max_length=8 splits a document into disjoint windows: as many scored tokens as the document has."""
    from philora.evaluation.lm_eval_model import PhiloraLM

    lm = PhiloraLM(pretrained=str(harness_run[0]), precision="fp32", max_length=8, batch_size=3)
    text = ROLLING_DOCS[0]["text"]
    ids = lm.tok_encode(text)
    assert len(ids) > 16
    seen = []
    original = lm.continuation_logprobs

    def recording(pairs):
        seen.extend(pairs)
        return original(pairs)

    lm.continuation_logprobs = recording

    class Request:
        args = (text,)

    (total,) = lm.loglikelihood_rolling([Request()])
    assert sum(len(continuation) for _, continuation in seen) == len(ids)
    assert all(len(context) + len(continuation) <= 9 for context, continuation in seen)
    expected = sum(_direct_logprob(lm.target, list(context), list(continuation)) for context, continuation in seen)
    assert total == pytest.approx(expected, abs=1e-5) and total < 0
