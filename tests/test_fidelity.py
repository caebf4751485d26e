"""Teacher-forced fidelity: pooled over tokens by default, per-prompt means under their own names."""

import math
from types import SimpleNamespace

import pytest
import torch

from speckd_bench.data.examples import Example
from speckd_bench.evaluation.evaluate import _add_fidelity
from speckd_bench.evaluation.fidelity import TeacherForced, teacher_forced, teacher_logits


class Bigram(torch.nn.Module):
    """Next-token logits that depend on the current token alone: one row of `table` per token id (a
    logit scale makes the model not fusable, so its logits come from forward)."""

    config = SimpleNamespace(logit_scale=1.0)

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


# After token 0 the teacher says [0.4, 0.6] and the student [0.9, 0.1]; after token 1 both say [0.8, 0.2].
TEACHER = Bigram([[0.4, 0.6], [0.8, 0.2]])
STUDENT = Bigram([[0.9, 0.1], [0.8, 0.2]])
# Prompt A predicts its one target after token 0; prompt B its three after tokens 1, 0, 1.
EXAMPLES = [Example([0], [1], "a", ["r"]), Example([1], [0, 1, 1], "b", ["r"])]
FKL_0 = 0.4 * math.log(0.4 / 0.9) + 0.6 * math.log(0.6 / 0.1)
RKL_0 = 0.9 * math.log(0.9 / 0.4) + 0.1 * math.log(0.1 / 0.6)
TVD_0 = 0.5 * (abs(0.4 - 0.9) + abs(0.6 - 0.1))  # 0.5
# Per token: A (after 0): the gap; B: none, the gap, none. So A's mean is the gap, B's a third of it.
EXPECTED = {
    "tf_fkl": 2 * FKL_0 / 4,
    "tf_rkl": 2 * RKL_0 / 4,
    "tf_tvd": 2 * TVD_0 / 4,
    "tf_top1": 200 / 4,  # both rank token 0 first after token 1 (2 of the 4 positions), not after 0
    "tf_fkl_prompt": (FKL_0 + FKL_0 / 3) / 2,
    "tf_rkl_prompt": (RKL_0 + RKL_0 / 3) / 2,
    "tf_tvd_prompt": (TVD_0 + TVD_0 / 3) / 2,
    "tf_top1_prompt": (0 + 200 / 3) / 2,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_teacher_logits_score_exactly_as_a_fresh_teacher_pass(dtype):
    teacher = Bigram([[0.4, 0.6], [0.8, 0.2]]).to(dtype)
    kept = teacher_logits(teacher, EXAMPLES, pad_id=0, vocab_size=2)
    assert [t.dtype for t in kept] == [dtype]  # a bfloat16 teacher's logits are kept at half the memory
    fresh = teacher_forced(STUDENT, teacher, EXAMPLES, pad_id=0, vocab_size=2).corpus()
    teacher.forward = None  # a scoring from the kept logits must not run the teacher again
    assert teacher_forced(STUDENT, teacher, EXAMPLES, pad_id=0, vocab_size=2, cached=kept).corpus() == fresh


def test_kept_teacher_logits_stay_float32_where_the_teacher_dtype_would_round_them():
    teacher = Bigram([[0.4, 0.6], [0.8, 0.2]]).to(torch.bfloat16)
    teacher.forward = lambda input_ids, attention_mask: SimpleNamespace(
        logits=torch.full((*input_ids.shape, 2), 0.1)
    )
    assert [t.dtype for t in teacher_logits(teacher, EXAMPLES, pad_id=0, vocab_size=2)] == [torch.float32]


def test_corpus_values_pool_tokens_and_prompt_values_average_prompts():
    forced = teacher_forced(STUDENT, TEACHER, EXAMPLES, pad_id=0, vocab_size=2)
    assert forced.tokens == [1, 3]
    corpus = forced.corpus()
    assert set(corpus) == set(EXPECTED)
    for name, want in EXPECTED.items():
        assert corpus[name] == pytest.approx(want, rel=1e-6), name
    assert corpus["tf_tvd"] == pytest.approx(0.25) and corpus["tf_tvd_prompt"] == pytest.approx(1 / 3)
    per_prompt = forced.per_prompt()
    assert per_prompt["tf_tvd_prompt"] == pytest.approx([TVD_0, TVD_0 / 3])
    assert per_prompt["tf_top1_prompt"] == pytest.approx([0.0, 200 / 3])


def test_fidelity_goes_into_every_seeds_corpus_and_each_sample_its_prompts_own():
    forced = TeacherForced({"tf_top1": [100.0, 100.0], "tf_tvd": [0.2, 0.9]}, [1, 3])
    per_seed = {1: {"rougeL": 10.0}, 2: {"rougeL": 20.0}}
    samples = [{"index": i, "eval_seed": seed, "scores": {}} for seed in (1, 2) for i in (0, 1)]
    _add_fidelity(per_seed, samples, forced, {})
    for seed in (1, 2):
        assert per_seed[seed]["tf_top1"] == pytest.approx(50.0)  # 200 / 4 tokens
        assert per_seed[seed]["tf_top1_prompt"] == pytest.approx((100 + 100 / 3) / 2)
        assert per_seed[seed]["tf_tvd"] == pytest.approx(1.1 / 4)
        assert "rougeL_teacher" not in per_seed[seed]  # no teacher outputs for these seeds
    assert samples[1]["scores"] == pytest.approx(
        {"tf_top1_prompt": 100 / 3, "tf_tvd_prompt": 0.3, "tf_tokens": 3}
    )
