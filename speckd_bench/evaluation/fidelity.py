"""How closely a student imitates its teacher on the eval set, teacher-forced: both models read the
prompt and the reference continuation, and at every reference token (EOS included) we compare their
next-token distributions. Forward passes only, thousands of tokens: far less noisy than scores of a hundred
generations.

Per token: forward KL(p_T || p_S) (`tf_fkl`) and reverse KL(p_S || p_T) (`tf_rkl`) in nats, the total
variation distance 1/2 sum_v |p_T(v) - p_S(v)| (`tf_tvd`, in [0, 1]), all lower is better, and whether both
models rank the same token first (`tf_top1`, in %).

How they average: each corpus value is pooled over tokens, the sum over every target position of the eval
set divided by their number, so every token counts once and a long reference weighs more than a short one.
The mean over prompts of each prompt's own mean, where every prompt weighs the same, is `<name>_prompt`
(e.g. `tf_top1_prompt`).

tf_fkl and tf_rkl are the training losses of the fkl and rkl methods, so each favours its own family;
tf_top1 looks at one token of each distribution only; tf_tvd is continuous, bounded and symmetric in the
two models, so it favours neither KL direction (the `tvd` method alone trains on it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from speckd_bench.data.examples import Batch, Example, collate
from speckd_bench.loss.divergences import fkl, rkl, tvd
from speckd_bench.models.loading import target_logits

BATCH = 8


def top1(logq: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """100 where both models rank the same token first, else 0, per row."""
    return (logp.argmax(-1) == logq.argmax(-1)).float() * 100.0


PER_TOKEN = {"tf_fkl": fkl, "tf_rkl": rkl, "tf_top1": top1, "tf_tvd": tvd}
"""Each fidelity metric per target token, from the student's and the teacher's log-probabilities."""


@dataclass
class TeacherForced:
    """The fidelity metrics of an eval set, summed over each example's target tokens."""

    sums: dict[str, list[float]]
    """{metric: [sum over the example's target tokens, per example]}."""
    tokens: list[int]
    """Target tokens per example."""

    def per_prompt(self) -> dict[str, list[float]]:
        """{"<metric>_prompt": [each example's mean over its target tokens]}."""
        return {
            f"{name}_prompt": [s / n for s, n in zip(v, self.tokens, strict=True)]
            for name, v in self.sums.items()
        }

    def corpus(self) -> dict[str, float]:
        """Every metric pooled over the eval set's tokens, and as `<metric>_prompt` the mean over prompts."""
        total = sum(self.tokens)
        pooled = {name: sum(values) / total for name, values in self.sums.items()}
        return pooled | {name: statistics.fmean(v) for name, v in self.per_prompt().items()}


LogProbs = Callable[[Batch], torch.Tensor]
"""A predictor's log-probabilities [target positions, V] at a batch's target positions."""


def _batches(model: Any, examples: list[Example], pad_id: int) -> Iterator[tuple[list[Example], Batch]]:
    """The scoring batches of `examples` (BATCH at a time, in order) on `model`'s device: the one batching
    that kept teacher logits and fresh teacher passes share."""
    device = next(model.parameters()).device
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        yield chunk, collate(chunk, pad_id).to(device)


def _compact(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`logits` in `dtype` where that holds them exactly (a bfloat16 teacher's logits are bfloat16 values:
    half the memory of float32, the same scores), else unchanged."""
    narrow = logits.to(dtype)
    return narrow if torch.equal(narrow.float(), logits) else logits


@torch.no_grad()
def teacher_logits(teacher: Any, examples: list[Example], pad_id: int, vocab_size: int) -> list[torch.Tensor]:
    """The teacher's target logits of `examples`, one tensor per batch of BATCH, for scoring many students
    (or one student many times) against the same teacher pass; exact, kept in the teacher's dtype."""
    dtype = next(teacher.parameters()).dtype
    return [
        _compact(target_logits(teacher, batch, vocab_size), dtype)
        for _, batch in _batches(teacher, examples, pad_id)
    ]


@torch.no_grad()
def compare_to_teacher(
    predictors: dict[str, LogProbs],
    teacher: Any,
    examples: list[Example],
    pad_id: int,
    vocab_size: int,
    cached: Sequence[torch.Tensor] | None = None,
) -> dict[str, TeacherForced]:
    """The fidelity metrics of each predictor to `teacher` on `examples`, in batches of BATCH (one teacher
    forward pass per batch, shared by the predictors; none where `cached` holds the teacher's
    `teacher_logits` of these examples)."""
    sums: dict[str, dict[str, list[float]]] = {p: {name: [] for name in PER_TOKEN} for p in predictors}
    for index, (chunk, batch) in enumerate(_batches(teacher, examples, pad_id)):
        logits = cached[index].float() if cached is not None else target_logits(teacher, batch, vocab_size)
        log_p = torch.log_softmax(logits, dim=-1)
        counts = [len(e.target_ids) for e in chunk]
        for predictor, log_probs in predictors.items():
            log_q = log_probs(batch)
            for name, fn in PER_TOKEN.items():
                sums[predictor][name].extend(float(part.sum()) for part in fn(log_q, log_p).split(counts))
    tokens = [len(e.target_ids) for e in examples]
    return {predictor: TeacherForced(values, tokens) for predictor, values in sums.items()}


def teacher_forced(
    student: Any,
    teacher: Any,
    examples: list[Example],
    pad_id: int,
    vocab_size: int,
    cached: Sequence[torch.Tensor] | None = None,
) -> TeacherForced:
    """The fidelity metrics of `student` to `teacher` on `examples` (`cached`: as compare_to_teacher)."""
    was_training = student.training
    student.eval()
    try:
        return compare_to_teacher(
            {"student": lambda batch: torch.log_softmax(target_logits(student, batch, vocab_size), dim=-1)},
            teacher,
            examples,
            pad_id,
            vocab_size,
            cached,
        )["student"]
    finally:
        student.train(was_training)
