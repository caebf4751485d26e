"""How closely a student imitates its teacher on the eval set, teacher-forced: both models read the
prompt and the reference continuation, and at every reference token we compare their next-token
distributions. Forward passes only, thousands of tokens: far less noisy than scores of a hundred
generations, and it measures what distillation optimises.

Per example (averaged over its reference tokens, EOS included): forward KL(p_T || p_S) and reverse
KL(p_S || p_T) in nats, and the share (%) of positions where both models rank the same token first. The
corpus value of each is the mean over examples, so every prompt weighs the same (as in the per-prompt
scores the leaderboard's prompt bootstrap resamples).
"""

from __future__ import annotations

from typing import Any

import torch

from speckd_bench.data.examples import Example, collate
from speckd_bench.models.loading import target_logits

BATCH = 8


@torch.no_grad()
def teacher_forced(
    student: Any, teacher: Any, examples: list[Example], pad_id: int, vocab_size: int
) -> dict[str, list[float]]:
    """{"tf_fkl": [...], "tf_rkl": [...], "tf_top1": [...]}: one value per example."""
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    out: dict[str, list[float]] = {"tf_fkl": [], "tf_rkl": [], "tf_top1": []}
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        batch = collate(chunk, pad_id).to(device)
        log_q = torch.log_softmax(target_logits(student, batch, vocab_size), dim=-1)
        log_p = torch.log_softmax(target_logits(teacher, batch, vocab_size), dim=-1)
        fkl = (log_p.exp() * (log_p - log_q)).sum(-1)
        rkl = (log_q.exp() * (log_q - log_p)).sum(-1)
        top1 = (log_p.argmax(-1) == log_q.argmax(-1)).float() * 100.0
        counts = [len(e.target_ids) for e in chunk]
        for name, values in (("tf_fkl", fkl), ("tf_rkl", rkl), ("tf_top1", top1)):
            out[name].extend(float(part.mean()) for part in values.split(counts))
    student.train(was_training)
    return out
