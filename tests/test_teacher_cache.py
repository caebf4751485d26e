"""The teacher cache: top-k rows stored once, read back identically, exact when k covers the vocabulary."""

import copy
import json
import math

import pytest
import torch
from conftest import backward_step
from tiny_models import tiny_llama
from typer.testing import CliRunner

from speckd_bench.api.method_config import KDConfig
from speckd_bench.cli.app import app
from speckd_bench.data.examples import Example, collate
from speckd_bench.engine.teacher_cache import CachedTeacher, TopKTable, build_table, top_k
from speckd_bench.loss.objective import LiveTeacher
from speckd_bench.models.loading import target_logits

VOCAB = 40


def examples() -> list[Example]:
    return [Example([3, 4, 5][: 1 + i % 3], list(range(6, 8 + i)), "p", ["r"]) for i in range(5)]


def test_dense_rows_keep_the_top_k_exactly_and_shape_the_rest_like_the_student():
    g = torch.Generator().manual_seed(0)
    logits, student = 3 * torch.randn(4, VOCAB, generator=g), torch.randn(4, VOCAB, generator=g)
    rows = top_k(logits, 5)
    dense = rows.logprobs(slice(None), VOCAB, student)
    exact = torch.log_softmax(logits, -1)
    assert torch.allclose(dense.gather(-1, rows.indices), exact.gather(-1, rows.indices))
    assert torch.allclose(rows.rest.exp(), 1 - rows.values.exp().sum(-1), atol=1e-6)
    in_top = torch.zeros_like(dense, dtype=torch.bool).scatter(-1, rows.indices, True)
    tail = dense.masked_fill(in_top, -math.inf)
    assert (tail < rows.values[:, -1:]).all()  # no cap was needed here
    # the tail holds exactly the mass the teacher left outside its top k, in the student's proportions
    assert torch.allclose(tail.logsumexp(-1), rows.rest, atol=1e-5)
    shape = tail - torch.log_softmax(student.masked_fill(in_top, -math.inf), -1)
    assert torch.allclose(shape[~in_top].view(4, -1), rows.rest[:, None].expand(4, VOCAB - 5), atol=1e-5)


def test_a_tail_token_never_outranks_the_teachers_top_k():
    logits = torch.zeros(1, VOCAB)
    logits[0, :3] = 2.0  # the teacher's top 3 hold about 40% of the mass; its tail 60%
    student = torch.zeros(1, VOCAB)
    student[0, 10] = 30.0  # the student puts all its tail mass on token 10
    rows = top_k(logits, 3)
    dense = rows.logprobs(slice(None), VOCAB, student)
    assert dense[0, 10] < rows.values[0, -1] and dense[0, 10] > rows.values[0, -1] - 1e-6
    assert set(dense.topk(3).indices[0].tolist()) == {0, 1, 2}


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
    cfg = KDConfig(divergence="fkl", gate="speckd" if method == "speckd" else "none", k=3)
    ex = examples()
    table = build_table(teacher, ex, 0, VOCAB, k=VOCAB, batch_size=4)
    grads = {}
    for cached in (False, True):
        model = copy.deepcopy(student)
        source = CachedTeacher(table) if cached else LiveTeacher(teacher)  # the cache never runs the teacher
        stats = backward_step(model, source, [collate(ex, 0)], cfg, VOCAB, rows=[ex])
        grads[cached] = (
            stats,
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]),
        )
    assert grads[True][0].loss == pytest.approx(grads[False][0].loss, rel=1e-5)
    assert grads[True][0].n_accepted == grads[False][0].n_accepted
    assert torch.allclose(grads[True][1], grads[False][1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_off_policy_runs_share_one_cache_that_the_first_builds(tmp_path, data_dir):
    args = ["run", "--preset", "tiny", "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--quiet"]
    args += [
        "--set",
        "train.teacher_cache=true",
        "--set",
        "train.teacher_cache_k=7",
        "--set",
        "train.max_steps=2",
    ]
    for method in ("fkl", "speckd", "sft"):
        res = CliRunner().invoke(app, [*args, "--method", method])
        assert res.exit_code == 0, (res.output, res.exception)
    paths = tmp_path.glob("runs/*/record.json")
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in paths)}
    fkl, speckd = records["fkl"]["teacher_cache"], records["speckd"]["teacher_cache"]
    assert (fkl["used"], fkl["hit"], fkl["k"]) == (True, False, 7)  # k=7: no other test built this one
    assert (speckd["used"], speckd["hit"], speckd["path"]) == (True, True, fkl["path"])
    assert 0 < fkl["top_k_mass"] <= 1
    assert records["sft"]["teacher_cache"] == {"used": False}  # cross-entropy needs no teacher


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("sft", {}, None),
        ("fkl", {"method.gate": "speckd", "method.k": "30"}, "method.k=30 is larger than"),
        ("fkl", {"method.gate": "random", "method.gate_match": "true", "method.k": "30"}, "method.k=30"),
        ("fkl", {"method.gate": "random", "method.k": "30"}, None),  # a fixed rate ranks nothing
        ("fkl", {"method.gate": "confidence"}, "teacher's entropy"),
    ],
)
def test_the_teacher_cache_refuses_gates_it_cannot_serve(method, settings, message):
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.engine import teacher_cache
    from speckd_bench.engine.recipe import build_run_config
    from speckd_bench.errors import UserError
    from speckd_bench.methods.discovery import discover_methods

    discover_tasks()
    methods = discover_methods()
    overrides = {"train.teacher_cache": "true", "train.teacher_cache_k": "20", **settings}
    cfg = build_run_config(method=method, preset="tiny", overrides=overrides)
    if message is None:
        teacher_cache.check(cfg, methods.get(method))
    else:
        with pytest.raises(UserError, match=message):
            teacher_cache.check(cfg, methods.get(method))
