"""SpecKD gate and loss normalisation."""

import pytest
import torch

from speckd_bench.config import MethodConfig
from speckd_bench.objective import kd_loss_sum
from speckd_bench.speckd import speckd_gate

# Teacher ranks tokens 0 > 1 > 2 > 3 > 4 > 5.
TEACHER = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]] * 2)
# Row 0: the student's argmax is token 1 (in the teacher's top-2); row 1: token 5 (outside it).
STUDENT = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 3.0]])


def test_topk_accepts_proposal_inside_teacher_topk_only():
    gate = speckd_gate(STUDENT, TEACHER, MethodConfig(gate="speckd", rule="topk", k=2))
    assert gate.accepted.tolist() == [True, False]
    assert gate.weights.tolist() == [1.0, 0.0]


def test_topk_with_large_k_accepts_everything_and_reject_weight_applies():
    assert speckd_gate(STUDENT, TEACHER, MethodConfig(rule="topk", k=6)).accepted.all()
    gate = speckd_gate(STUDENT, TEACHER, MethodConfig(rule="topk", k=2, reject_weight=0.01))
    assert gate.weights.tolist() == pytest.approx([1.0, 0.01])


def test_gated_loss_counts_only_accepted_tokens():
    cfg = MethodConfig(gate="speckd", rule="topk", k=2, divergence="fkl")
    out = kd_loss_sum(STUDENT, TEACHER, cfg)
    plain = kd_loss_sum(STUDENT[:1], TEACHER[:1], MethodConfig(divergence="fkl"))
    assert out.loss_sum.item() == pytest.approx(plain.loss_sum.item(), rel=1e-6)
    assert (out.n_tokens, out.n_accepted) == (2, 1)
    assert out.denominator("all") == 2 and out.denominator("accepted") == 1


def test_gate_carries_no_gradient():
    s = STUDENT.clone().requires_grad_(True)
    gate = speckd_gate(s, TEACHER, MethodConfig(rule="topk", k=2))
    assert not gate.weights.requires_grad
