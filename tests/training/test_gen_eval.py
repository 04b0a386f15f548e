"""Generation metrics: ROUGE against rouge-score itself, the prompt/reference split, stop detection, scoring."""

from __future__ import annotations

import pytest
import torch

import phi_models
from philora.data import IGNORE_INDEX, Example
from philora.training.gen_eval import (
    GenerationCase,
    Reply,
    case_from_example,
    generate_replies,
    generation_cases,
    score_replies,
)
from philora.training.gen_metrics import exact_match, mean_rouge, rouge_per_pair
from philora.training.precision import Precision

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="rouge-score is in the eval/test extras")

PAIRS = [  # (prediction, reference)
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat sat", "the cat ran"),
    ("a dog barked loudly at the mailman", "the dog barked at the postman"),
    ("Refund issued; please check your account.", "The agent issued a refund and asked the customer to check."),
    ("", "nothing was generated"),
    ("Tea, slow water, good tea!", "slow water makes good tea"),
]
CPU_FP32 = Precision("fp32", torch.device("cpu"))


def test_rouge_equals_rouge_scores_own_numbers():
    ours = rouge_per_pair([p for p, _ in PAIRS], [r for _, r in PAIRS])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    theirs = [scorer.score(reference, prediction) for prediction, reference in PAIRS]
    for mine, reference in zip(ours, theirs):
        for name in ("rouge1", "rouge2", "rougeL"):
            assert mine[name] == reference[name].fmeasure
    means = mean_rouge(ours)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert means[name] == pytest.approx(sum(t[name].fmeasure for t in theirs) / len(theirs), abs=1e-12)
    # by hand: "the cat sat" vs "the cat ran": 2 of 3 unigrams, 1 of 2 bigrams, LCS 2 of 3
    assert ours[1] == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})
    assert ours[0] == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0} and ours[4]["rouge1"] == 0.0


def test_exact_match_normalizes_whitespace_only():
    assert exact_match("  slow water\n makes tea ", "slow water makes tea")
    assert not exact_match("Slow water makes tea", "slow water makes tea")


def _example(segments: list[tuple[list[int], bool]], eos_run: bool) -> Example:
    """An Example from (tokens, is_target) segments, shifted as data builds it."""
    ids, flags = [], []
    for tokens, target in segments:
        ids += tokens
        flags += [target] * len(tokens)
    targets = [ids[t + 1] if t + 1 < len(ids) and flags[t + 1] else IGNORE_INDEX for t in range(len(ids))]
    if eos_run:  # data's final EOS after the last turn's end marker: its own one-token run
        ids += [0]
        targets[-1] = IGNORE_INDEX
        targets.append(IGNORE_INDEX)
        targets[-2] = 0
    return Example(input_ids=ids, targets=targets)


def test_case_is_the_last_reply_and_everything_before_it():
    example = _example(
        [([10, 11, 12], False), ([20, 21, 4], True), ([13, 14], False), ([30, 31, 32, 4], True), ([203], False)],
        eos_run=True,
    )
    case = case_from_example(example, stop_ids=[0, 4])
    assert case.reference_ids == [30, 31, 32, 4]  # not the lone EOS run after it
    assert case.prompt_ids == [10, 11, 12, 20, 21, 4, 13, 14]
    no_reply = Example(input_ids=[1, 2, 3], targets=[IGNORE_INDEX] * 3)
    assert case_from_example(no_reply, [0]) is None
    assert len(generation_cases([no_reply, example, example, example], [0, 4], limit=2)) == 2


def _cut_at_stop(ids, stops):
    """Greedy decoding is one path whatever the stop ids: a stop cuts it at its first stop token."""
    for k, token in enumerate(ids):
        if token in stops:
            return ids[:k], True
    return ids, False


def test_generate_replies_detects_stops_like_plain_greedy_decoding():
    model = phi_models.from_pretrained("tiny")
    prompts = [[5, 6, 7, 8], [40, 41], [100, 101, 102, 103, 104, 105], [7]]
    # each prompt alone, no stop ids (phi_models' tests check this against uncached decoding)
    free = [phi_models.generate(model, p, max_new_tokens=6)[0] for p in prompts]
    stops = {free[0][2], free[1][0]}  # the 3rd token of prompt 0's reply, the 1st of prompt 1's
    replies = generate_replies(
        model, prompts, max_new_tokens=6, stop_ids=sorted(stops), pad_id=0, batch_size=3, precision=CPU_FP32
    )
    assert [(r.ids, r.stopped) for r in replies] == [_cut_at_stop(f, stops) for f in free]
    assert replies[0].stopped and len(replies[0].ids) <= 2 and replies[1] == Reply(ids=[], stopped=True)
    assert any(not r.stopped and len(r.ids) == 6 for r in replies)


def test_scores_and_stop_share():
    tok = phi_models.load_tokenizer("tiny")
    texts = ["Slow water makes good tea.", "I am Master Chen.", "Goodbye, friend."]
    cases = [
        GenerationCase(prompt_ids=tok.encode("Q"), reference_ids=tok.encode(t) + [tok.eos_token_id]) for t in texts
    ]
    replies = [
        Reply(ids=tok.encode(texts[0]), stopped=True),
        Reply(ids=tok.encode("I am Chen."), stopped=False),
        Reply(ids=tok.encode("Hello there, friend and more"), stopped=True),
    ]
    result = score_replies(cases, replies, tok)
    m = result.metrics
    assert m["examples"] == 3 and m["stop_share"] == pytest.approx(2 / 3) and m["exact_match"] == pytest.approx(1 / 3)
    assert m["reply_tokens"] == pytest.approx(sum(len(r.ids) for r in replies) / 3)
    assert result.samples[0]["rouge1"] == 1.0 and result.samples[0]["reference"] == texts[0]
    assert m["rougeL"] == pytest.approx(sum(s["rougeL"] for s in result.samples) / 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eval-generate", "-1"], "--eval-generate must be >= 0"),
        (["--eval-generate-tokens", "0"], "--eval-generate-tokens must be >= 1"),
        (["--eval-generate", "4", "--train-on-prompt"], "--eval-generate needs masked prompts"),
    ],
)
def test_eval_generate_options_are_checked(extra, message):
    from philora.training.config import parse_config
    from philora.training.errors import TrainingError

    with pytest.raises(TrainingError, match=message):
        parse_config(["--model", "tiny", "--data", "samples/roleplay", *extra])
    assert parse_config(["--model", "tiny", "--data", "samples/roleplay", "--eval-generate", "4"]).eval_generate == 4
