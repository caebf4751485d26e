"""Floors chosen on training data: the greedy constant, the echo of every prompt field together, and the
fidelity floors (unigram and bigram next-token predictors) on hand-made counts and distributions."""

import math

import pytest
import torch

from speckd_bench.api.metrics import rouge
from speckd_bench.data.examples import Example
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.evaluation.floors import (
    fit_token_floors,
    floor_scores,
    frequent_words,
    greedy_constant,
    response_positions,
    token_floor_predictions,
    token_floor_scores,
)


def test_greedy_constant_appends_the_word_that_raises_rouge_until_none_does():
    task = discover_tasks().get("dolly")
    refs = [["a b"], ["a b"], ["a c"]]
    assert frequent_words(refs, 2) == ["a", "b"]
    # "a": F = 2/3 on every reference (66.7); then "a b": 1, 1, 1/2 (83.3) beats "a a" (50) and "a c"
    # (66.7); then "a b c" reaches 0.8, 0.8, 0.8 (80) and "a b a" / "a b b" 66.7: none beats 83.3.
    assert greedy_constant(task, refs) == "a b"


def test_the_constant_floor_chooses_among_fixed_and_greedy_strings_on_training_references():
    task = discover_tasks().get("dolly")
    train = [{"instruction": "q", "input": "", "output": o} for o in ("a b", "a b", "a c")]
    rows = [{"instruction": "Say it", "input": "", "output": "a b"}]
    constant = floor_scores(task, rows, train)["constant"]
    assert constant["output"] == "a b" and constant["chosen_from"][-1] == "a b"
    assert constant["metrics"]["rougeL"] == pytest.approx(100.0)


def test_echo_of_instruction_and_input_together():
    task = discover_tasks().get("dolly")
    rows = [
        {"instruction": "Say yes please", "input": "", "output": "yes"},
        {"instruction": "Is it so?", "input": "it is so", "output": "it is so"},
    ]
    floor = floor_scores(task, rows, rows)["echo_instruction_input"]
    expected = (
        rouge("rougeL", "Say yes please", ["yes"]) + rouge("rougeL", "Is it so?\n\nit is so", ["it is so"])
    ) / 2
    assert floor["output"] == "<instruction> + <input>"
    assert floor["metrics"]["rougeL"] == pytest.approx(expected)


def _floors():
    # Response positions (read -> predicted): 3->1, 1->2, 2->1 | 3->1, 1->1 | 2->3, 3->2, 2->3.
    train = [
        Example([3], [1, 2, 1], "p", ["r"]),
        Example([0, 3], [1, 1], "p", ["r"]),
        Example([2], [3, 2, 3], "p", ["r"]),
    ]
    return fit_token_floors(train, 4)


def test_response_positions_follow_collate():
    reads, predicts = response_positions([Example([5, 6], [7, 8, 2], "p", ["r"])])
    assert reads.tolist() == [6, 7, 8] and predicts.tolist() == [7, 8, 2]


def test_token_floors_count_and_smooth_by_hand():
    floors = _floors()
    assert floors.unigram.tolist() == [0, 4, 2, 2]
    predictions = token_floor_predictions(floors, torch.tensor([1, 2, 3, 0]))
    unigram, top = predictions["unigram"]
    assert torch.allclose(unigram.exp(), torch.tensor([[1, 5, 3, 3]]).expand(4, 4) / 12)
    assert top.tolist() == [1, 1, 1, 1]
    bigram, top = predictions["bigram"]
    expected = torch.tensor([[1, 2, 2, 1], [1, 2, 1, 3], [1, 3, 2, 1], [1, 1, 1, 1]]) / torch.tensor(
        [[6], [7], [7], [4]]
    )
    assert torch.allclose(bigram.exp(), expected.float())
    # after 1: tokens 1 and 2 once each, 1 the more frequent; after 0 (never seen): the unigram's top, 1
    assert top.tolist() == [1, 3, 1, 1]


def test_token_floor_scores_against_a_teacher_by_hand():
    teacher = torch.tensor([[0.1, 0.1, 0.1, 0.7], [0.25, 0.25, 0.25, 0.25], [0.1, 0.6, 0.2, 0.1]])
    reads = torch.tensor([2, 0, 3])  # teacher argmax 3, (tie: 0), 1
    scores = token_floor_scores(_floors(), reads, teacher.log())
    assert scores["bigram"]["tf_top1"].tolist() == [100.0, 0.0, 100.0]
    assert scores["unigram"]["tf_top1"].tolist() == [0.0, 0.0, 100.0]

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    unigram = [1 / 12, 5 / 12, 3 / 12, 3 / 12]
    bigram = [[1 / 7, 2 / 7, 1 / 7, 3 / 7], [0.25] * 4, [1 / 7, 3 / 7, 2 / 7, 1 / 7]]
    rows = teacher.tolist()
    assert scores["bigram"]["tf_fkl"].tolist() == pytest.approx(
        [kl(p, q) for p, q in zip(rows, bigram, strict=True)], abs=1e-6
    )
    assert scores["unigram"]["tf_fkl"].tolist() == pytest.approx([kl(p, unigram) for p in rows], abs=1e-6)
    assert scores["bigram"]["tf_fkl"][1] == pytest.approx(0.0, abs=1e-6)
