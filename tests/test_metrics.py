"""Metrics agree with the reference libraries and with hand-computed values; GSM8K answers are extracted."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from speckd_bench.api.metrics import METRICS, last_number, number_after, register_metric, score
from speckd_bench.data.tasks import discover_tasks

PAIRS = [
    ("The cat sat on the mat.", ["The cat is on the mat.", "A cat was sitting on a mat."]),
    ("Paris is the capital of France", ["The capital of France is Paris."]),
    ("running runners ran quickly", ["the runner runs quick", "nothing in common here"]),
    ("", ["an empty output scores zero"]),
    ("Yes", ["yes", "no"]),
]


def test_rouge_l_equals_rouge_score_max_over_references_times_100():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    preds = [p for p, _ in PAIRS]
    refs = [r for _, r in PAIRS]
    ours = score(["rougeL"], preds, refs)
    expected = [100 * max(scorer.score(ref, p)["rougeL"].fmeasure for ref in r) for p, r in PAIRS]
    assert ours["per_example"]["rougeL"] == pytest.approx(expected, abs=1e-9)
    assert ours["corpus"]["rougeL"] == pytest.approx(sum(expected) / len(expected))


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" and "the cat is on the mat" is "the cat on the mat": P = R = 5/6.
    value = METRICS.get("rougeL").per_example("the cat sat on the mat", ["the cat is on the mat"])
    assert value == pytest.approx(100 * 5 / 6)


def test_bleu_and_chrf_equal_sacrebleu_corpus_scores():
    preds = ["the cat is on the mat", "there is a dog in the garden", "hello world"]
    streams = [
        ["the cat is on the mat", "a dog is in the garden", "hello there world"],
        ["a cat sits on the mat", "there is a dog in a garden", "hi world"],
    ]
    refs = [list(r) for r in zip(*streams, strict=True)]
    ours = score(["bleu", "chrf"], preds, refs)["corpus"]
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, streams).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, streams).score)
    single = score(["bleu"], preds, [[r] for r in streams[0]])["corpus"]["bleu"]
    assert single == pytest.approx(sacrebleu.corpus_bleu(preds, [streams[0]]).score)
    assert score(["bleu"], streams[0], [[r] for r in streams[0]])["corpus"]["bleu"] == pytest.approx(100.0)


def test_exact_match_uses_squad_normalisation():
    em = METRICS.get("exact_match").per_example
    assert em("The  Cat!", ["a dog", "cat"]) == 100.0
    assert em("the cat sat", ["cat"]) == 0.0


@pytest.mark.parametrize(
    ("output", "number"),
    [
        ("She has 1,234 apples.", "1234"),
        ("The answer is 72.", "72"),
        ("It costs $18.", "18"),
        ("Total: $1,000,000.50", "1000000.5"),
        ("The temperature drops to -5 degrees", "-5"),
        ("He owes -$3,000 now", "-3000"),
        ("18.00", "18"),
        ("pages 10-15 were read", "15"),
        ("First 5, then 6, finally 7, done", "7"),
        ("2 + 3 = 5\n#### 5", "5"),
        ("I do not know.", ""),
        ("", ""),
    ],
)
def test_gsm8k_prediction_is_the_last_number(output, number):
    assert last_number(output) == number


def test_gsm8k_reference_is_the_number_after_the_marker():
    assert number_after("48/2 = <<48/2=24>>24 clips.\n#### 1,024", "####") == "1024"
    assert number_after("no marker, 12 apples", "####") == ""


def test_gsm8k_task_scores_accuracy_of_the_extracted_answers():
    task = discover_tasks().get("gsm8k")
    row = {"question": "q", "answer": "She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"}
    assert task.references(row) == ["18"]
    assert task.target(row) == row["answer"]
    outputs = ["So she makes $18.", "She makes 18.00 dollars", "#### 81", "eighteen"]
    answers = [task.answer(o) for o in outputs]
    scored = score(task.metrics, answers, [task.references(row)] * len(outputs))
    assert scored["per_example"]["accuracy"] == [100.0, 100.0, 0.0, 0.0]
    assert scored["corpus"]["accuracy"] == 50.0


def test_a_registered_metric_is_scored_by_name():
    register_metric("test_length", "output length in words", per_example=lambda p, r: float(len(p.split())))
    assert score(["test_length"], ["a b c", "d"], [["x"], ["y"]])["corpus"]["test_length"] == 2.0


def test_a_raw_metric_scores_the_whole_output_and_the_others_the_extracted_answer():
    register_metric(
        "has_answer_line_probe",
        "output has an 'Answer:' line",
        lambda out, refs: 100.0 * ("Answer:" in out),
        raw=True,
    )
    outputs = ["Reasoning...\nAnswer: 4", "4"]
    answers = ["4", "4"]  # what a hook's extract_prediction made of them
    scored = score(["has_answer_line_probe", "exact_match"], answers, [["4"], ["4"]], outputs=outputs)
    assert scored["per_example"] == {"has_answer_line_probe": [100.0, 0.0], "exact_match": [100.0, 100.0]}
    assert scored["corpus"] == {"has_answer_line_probe": 50.0, "exact_match": 100.0}
