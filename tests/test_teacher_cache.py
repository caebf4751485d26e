"""The teacher cache: top-k rows stored once, read back identically, exact when k covers the vocabulary."""

import copy
import math

import pytest
import torch
from tiny_models import tiny_llama

from speckd_bench.config import MethodConfig, TrainConfig
from speckd_bench.data import Example, collate
from speckd_bench.methods import Method
from speckd_bench.models import target_logits
from speckd_bench.teacher_cache import TopKTable, build_table, top_k
from speckd_bench.train import accumulate

VOCAB = 40


def examples() -> list[Example]:
    return [Example([3, 4, 5][: 1 + i % 3], list(range(6, 8 + i)), "p", ["r"]) for i in range(5)]


def test_dense_rows_keep_the_top_k_exactly_and_spread_the_rest_evenly():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(0))
    rows = top_k(logits, 5)
    dense = rows.logprobs(slice(None), VOCAB)
    exact = torch.log_softmax(logits, -1)
    assert torch.allclose(dense.gather(-1, rows.indices), exact.gather(-1, rows.indices))
    assert torch.allclose(dense.logsumexp(-1), torch.zeros(4), atol=1e-6)  # still a distribution
    tail = dense.scatter(-1, rows.indices, math.inf)
    tail_values = tail[tail.isfinite()].view(4, VOCAB - 5)
    assert torch.allclose(tail_values, tail_values[:, :1].expand_as(tail_values))
    assert torch.allclose(rows.rest.exp(), 1 - rows.values.exp().sum(-1), atol=1e-6)


def test_table_round_trip_returns_each_examples_rows_in_collate_order(tmp_path):
    teacher = tiny_llama(1).eval()
    ex = examples()
    table = build_table(teacher, ex, 0, VOCAB, k=7, batch_size=2)
    table.save(tmp_path / "t.safetensors", {})
    loaded = TopKTable.load(tmp_path / "t.safetensors")
    batch = [ex[3], ex[0], ex[4]]
    want = top_k(target_logits(teacher, collate(batch, 0), VOCAB), 7)
    got = loaded.lookup(batch)
    assert torch.equal(got.indices, want.indices)
    assert torch.allclose(got.values, want.values, atol=1e-6)
    assert torch.allclose(got.rest, want.rest, atol=1e-5)


@pytest.mark.parametrize("method", ["fkl", "speckd"])
def test_a_cache_with_k_equal_to_the_vocabulary_gives_the_teachers_own_gradients(method):
    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    cfg = MethodConfig(divergence="fkl", gate="speckd" if method == "speckd" else "none", k=3)
    ex = examples()
    table = build_table(teacher, ex, 0, VOCAB, k=VOCAB, batch_size=4)
    grads = {}
    for cached in (False, True):
        model = copy.deepcopy(student)
        batch = collate(ex, 0)
        if cached:
            batch.teacher_topk = table.lookup(ex)
        runs_teacher = None if cached else teacher  # the cached step never calls the teacher
        kd = Method(method, "t", "t")
        stats = accumulate(model, runs_teacher, [batch], kd, cfg, VOCAB, None, TrainConfig())
        grads[cached] = (
            stats,
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]),
        )
    assert grads[True][0].loss == pytest.approx(grads[False][0].loss, rel=1e-5)
    assert grads[True][0].n_accepted == grads[False][0].n_accepted
    assert torch.allclose(grads[True][1], grads[False][1], rtol=1e-4, atol=1e-6)
