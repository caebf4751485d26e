"""Gradient accumulation normalises by the target tokens of the whole optimiser step."""

import copy

import pytest
import torch
from conftest import backward_step
from tiny_models import tiny_llama

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.api.methods import Method
from speckd_bench.data.examples import Example, collate
from speckd_bench.loss.objective import LiveTeacher

FKL = Method("fkl", "test", "test", defaults={"divergence": "fkl"})
SFT = Method("sft", "test", "test", config=MethodConfig)


def examples():
    # Unequal target counts: 1, 7, 2, 5 targets.
    lengths = [1, 7, 2, 5]
    return [Example([3, 4, 5], list(range(6, 6 + n)), "p", ["r"]) for n in lengths]


def grads(student, teacher, micro, method, normalize="all"):
    student = copy.deepcopy(student)
    student.zero_grad()
    cfg = KDConfig(divergence="fkl", normalize=normalize)
    source = LiveTeacher(teacher) if method.uses_teacher else None
    stats = backward_step(student, source, micro, cfg, 40)
    return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None]), stats


@pytest.mark.parametrize("method", [FKL, SFT], ids=["fkl", "sft"])
def test_one_batch_of_four_equals_two_micro_batches_of_two(method):
    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    ex = examples()
    whole, s1 = grads(student, teacher, [collate(ex, 0)], method)
    split, s2 = grads(student, teacher, [collate(ex[:2], 0), collate(ex[2:], 0)], method)
    assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4)
    assert s1.loss == pytest.approx(s2.loss, rel=1e-5)
    assert s1.n_tokens == s2.n_tokens == 15
    # Averaging per micro-batch (the common bug) gives a different gradient here.
    a, _ = grads(student, teacher, [collate(ex[:2], 0)], method)
    b, _ = grads(student, teacher, [collate(ex[2:], 0)], method)
    assert not torch.allclose(whole, (a + b) / 2, atol=1e-6, rtol=1e-4)
