"""Floors chosen on training data: the greedy constant, the echo of every prompt field together, and the
fidelity floors (unigram and bigram next-token predictors) on hand-made counts and distributions."""

import math
from types import SimpleNamespace

import pytest
import torch

from speckd_bench.api.metrics import rouge
from speckd_bench.data.examples import Example
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.evaluation.floors import (
    fit_token_floors,
    floor_log_probs,
    floor_scores,
    frequent_words,
    greedy_constant,
    response_positions,
    token_floor_fidelity,
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
    unigram = torch.tensor([1, 5, 3, 3]) / 12
    reads = torch.tensor([1, 2, 3, 0])
    assert torch.allclose(floor_log_probs(floors, "unigram", reads).exp(), unigram.expand(4, 4))
    # counts after 1: {2: 1, 1: 1}; after 2: {1: 1, 3: 2}; after 3: {1: 2, 2: 1}; after 0: none (the unigram)
    counts = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 2], [0, 2, 1, 0], [0, 0, 0, 0]]).float()
    expected = (counts + unigram) / (counts.sum(-1, keepdim=True) + 1)
    bigram = floor_log_probs(floors, "bigram", reads).exp()
    assert torch.allclose(bigram, expected) and torch.allclose(bigram.sum(-1), torch.ones(4))
    # after 1: tokens 1 and 2 once each, and the unigram ranks 1 first
    assert bigram.argmax(-1).tolist() == [1, 3, 1, 1]


class _Table(torch.nn.Module):
    """A teacher whose next-token distribution depends on the token read only (one row per token)."""

    config = SimpleNamespace(logit_scale=1.0)

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def test_token_floor_fidelity_scores_the_floors_like_students_by_hand():
    rows = [[0.25] * 4, [0.1, 0.1, 0.1, 0.7], [0.1, 0.6, 0.2, 0.1], [0.1, 0.2, 0.6, 0.1]]
    teacher = _Table(rows)
    examples = [Example([2], [3, 1], "p", ["r"])]  # positions read 2 then 3
    out = token_floor_fidelity(_floors(), teacher, examples, pad_id=0, vocab_size=4)
    unigram = [1 / 12, 5 / 12, 3 / 12, 3 / 12]
    after = {
        2: [1 / 12 / 4, (1 + 5 / 12) / 4, 3 / 12 / 4, (2 + 3 / 12) / 4],
        3: [1 / 12 / 4, (2 + 5 / 12) / 4, (1 + 3 / 12) / 4, 3 / 12 / 4],
    }

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    assert out["unigram_tokens"]["metrics"]["tf_fkl"] == pytest.approx(
        (kl(rows[2], unigram) + kl(rows[3], unigram)) / 2
    )
    assert out["bigram_tokens"]["metrics"]["tf_fkl"] == pytest.approx(
        (kl(rows[2], after[2]) + kl(rows[3], after[3])) / 2
    )
    # teacher argmax: 1 after 2, 2 after 3; unigram ranks 1 first everywhere; bigram: 3 after 2, 1 after 3
    assert out["unigram_tokens"]["metrics"]["tf_top1"] == pytest.approx(50.0)
    assert out["bigram_tokens"]["metrics"]["tf_top1"] == pytest.approx(0.0)
    assert set(out["bigram_tokens"]["metrics"]) == {"tf_fkl", "tf_rkl", "tf_tvd", "tf_top1"}
