"""The fused, chunked loss gives the plain loss's values and gradients for every divergence, gated or not."""

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import backward_step
from tiny_models import tiny_llama
from torch._dynamo.utils import counters

from speckd_bench.api.method_config import KDConfig
from speckd_bench.config.run_config import TrainConfig
from speckd_bench.data.examples import Example, collate
from speckd_bench.loss.chunk_body import TemperedLogProbs
from speckd_bench.loss.chunked_head import chunk_rows, chunked_head_loss
from speckd_bench.loss.divergences import DIVERGENCES
from speckd_bench.loss.gate import GateDraws, control_gate, gate_result, speckd_gate
from speckd_bench.loss.objective import (
    LiveTeacher,
    MicroBatch,
    OutputHead,
    fused_kd_loss_sum,
    fused_sft_loss_sum,
    kd_loss_sum,
    micro_batch_loss,
    sft_loss_sum,
)

N, H, V = 11, 6, 17
SPEC_RULE = {"rule": "spec", "propose": "sample", "gen_temperature": 0.7}
GATES = {
    "none": {},
    "topk": {"gate": "speckd", "rule": "topk", "k": 3, "reject_weight": 0.1},
    "prob": {"gate": "speckd", "rule": "prob", "tau": 0.05},
    "spec": {"gate": "speckd", "rule": "spec", "propose": "sample", "gen_temperature": 0.7},
    "random": {"gate": "random", "gate_rate": 0.4, "reject_weight": 0.1},
    "confidence": {"gate": "confidence", "gate_match": True, **SPEC_RULE, "reject_weight": 0.05},
}
SEED = 5
"""Every path seeds its own generator alike: the sampled gate draws the same numbers chunk by chunk."""


def inputs(seed: int = 0, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    teacher = 2 * torch.randn(N, V, generator=g, dtype=torch.float64)
    return hidden, weight, b, teacher


def gate_weights(logits: torch.Tensor, teacher: torch.Tensor, cfg: KDConfig) -> torch.Tensor:
    """The gate's weights on all N rows at once, from a generator seeded with SEED."""
    gen = torch.Generator().manual_seed(SEED)
    if cfg.gate == "speckd":
        return speckd_gate(logits, teacher, cfg, gen).weights
    draws = GateDraws.draw(N, cfg, gen, logits.device)
    accepted = control_gate(cfg, draws, N, [(slice(None), logits, TemperedLogProbs(teacher))])
    return gate_result(accepted, cfg.reject_weight).weights


def float64_reference(hidden, weight, bias, teacher, cfg: KDConfig):
    """sum_t w_t D_t computed in float64 straight from the divergence's own function."""
    hidden, weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logits = F.linear(hidden, weight, bias)
    div = DIVERGENCES.get(cfg.divergence)
    params = {k: getattr(cfg, k) for k in div.params}
    per_token = div.fn(torch.log_softmax(logits, -1), torch.log_softmax(teacher, -1), **params)
    weights = torch.ones(N, dtype=torch.float64)
    if cfg.gate != "none":
        weights = gate_weights(logits.detach().float(), teacher.float(), cfg).double()
    loss = (weights * per_token).sum()
    loss.backward()
    return float(loss.detach()), hidden.grad, weight.grad


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("divergence", list(DIVERGENCES))
def test_fused_equals_plain_and_float64_for_every_divergence(divergence, gate):
    hidden64, weight64, bias64, teacher64 = inputs()
    cfg = KDConfig(divergence=divergence, **GATES[gate])
    want, want_dh, want_dw = float64_reference(hidden64, weight64, bias64, teacher64, cfg)

    h, w = hidden64.float().requires_grad_(), weight64.float().requires_grad_()
    b, teacher = bias64.float().requires_grad_(), teacher64.float()
    gen = torch.Generator().manual_seed(SEED)
    fused = fused_kd_loss_sum(OutputHead(h, w, b, rows=4), lambda part, _: teacher[part], cfg, gen)
    (2.0 * fused.loss_sum).backward()  # the outer scale reaches every stored gradient

    hp, wp, bp = (t.detach().clone().requires_grad_() for t in (h, w, b))
    plain = kd_loss_sum(F.linear(hp, wp, bp), teacher, cfg, torch.Generator().manual_seed(SEED))
    (2.0 * plain.loss_sum).backward()

    assert fused.loss_sum.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert plain.loss_sum.item() == pytest.approx(fused.loss_sum.item(), rel=1e-6, abs=1e-6)
    assert (fused.n_tokens, fused.n_accepted) == (plain.n_tokens, plain.n_accepted)
    assert fused.divergence_sum == pytest.approx(plain.divergence_sum, rel=1e-6, abs=1e-6)
    for got, ref, ref64 in ((h.grad, hp.grad, want_dh), (w.grad, wp.grad, want_dw), (b.grad, bp.grad, None)):
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
        if ref64 is not None:
            assert torch.allclose(got.double(), 2.0 * ref64, rtol=1e-4, atol=1e-5)
    if gate != "none":
        assert 0 < fused.n_accepted < N  # the gate really selects: the test covers both branches


def test_fused_cross_entropy_equals_plain():
    hidden64, weight64, _, _ = inputs(1, bias=False)
    targets = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(2))
    h, w = hidden64.float().requires_grad_(), weight64.float().requires_grad_()
    fused = fused_sft_loss_sum(OutputHead(h, w, None, rows=5), targets)
    fused.loss_sum.backward()
    hp, wp = hidden64.float().requires_grad_(), weight64.float().requires_grad_()
    plain = sft_loss_sum(hp @ wp.T, targets)
    plain.loss_sum.backward()
    assert fused.loss_sum.item() == pytest.approx(plain.loss_sum.item(), rel=1e-6)
    assert torch.allclose(h.grad, hp.grad, atol=1e-6) and torch.allclose(w.grad, wp.grad, atol=1e-6)


def test_chunks_see_every_row_once_and_in_order():
    seen = []

    def record(logits, part):
        seen.append((part.start, part.stop, logits.shape[0]))
        return logits.sum()

    chunked_head_loss(torch.ones(10, 2, requires_grad=True), torch.ones(3, 2), None, record, 4)
    assert seen == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]


def test_chunk_rows_targets_a_fixed_number_of_logits():
    assert chunk_rows(49152) == (1 << 25) // 49152
    assert chunk_rows(10**9) == 1
    assert chunk_rows(49152, requested=64) == 64


def fused_loss(cfg: KDConfig, rows: int, compile_backend: str | None = None, seed: int = 0):
    """(loss, n_accepted, divergence sum, grad of hidden, grad of weight) of the fused path in float32."""
    hidden64, weight64, bias64, teacher64 = inputs(seed)
    h, w, teacher = hidden64.float().requires_grad_(), weight64.float().requires_grad_(), teacher64.float()
    head = OutputHead(h, w, bias64.float(), rows=rows, compile_backend=compile_backend)
    gen = torch.Generator().manual_seed(SEED)
    out = fused_kd_loss_sum(head, lambda part, _: teacher[part], cfg, gen)
    out.loss_sum.backward()
    return out.loss_sum.item(), out.n_accepted, out.divergence_sum, h.grad, w.grad


def assert_same_loss(got, want, rel: float = 1e-5) -> None:
    assert got[0] == pytest.approx(want[0], rel=rel, abs=1e-6)
    assert got[1] == want[1]
    assert got[2] == pytest.approx(want[2], rel=rel, abs=1e-6)
    for g, w in zip(got[3:], want[3:], strict=True):
        assert torch.allclose(g, w, rtol=rel, atol=1e-6)


@pytest.mark.parametrize(
    "gate",
    [
        GATES["spec"],
        {**GATES["prob"], "propose": "sample"},
        GATES["random"],
        GATES["confidence"],
        {"gate": "random", "gate_match": True, **SPEC_RULE},
    ],
    ids=["spec", "prob", "random", "confidence-matched", "random-matched"],
)
def test_sampled_gate_does_not_depend_on_the_chunk_size(gate):
    """The gate's random numbers are drawn per micro-batch, and a control gate chooses its rows over the
    whole micro-batch, so chunking never changes which rows pass."""
    cfg = KDConfig(divergence="fkl", **gate)
    assert_same_loss(fused_loss(cfg, rows=3), fused_loss(cfg, rows=N))


@pytest.mark.parametrize(
    ("gate", "teacher_softmaxes"),
    [("none", 1), ("topk", 1), ("prob", 1), ("spec", 2)],
)
def test_teacher_log_probs_are_computed_once_per_temperature(monkeypatch, gate, teacher_softmaxes):
    """Per chunk the teacher's log-softmax runs once per temperature the chunk needs (the spec case
    here samples at gen_temperature 0.7 and distils at 1.0), shared by the gate and the divergence; the
    student's once for the divergence, once more for the spec rule."""
    calls: list[bool] = []
    real = torch.log_softmax

    def counting(x, *args, **kwargs):
        calls.append(x.requires_grad)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch, "log_softmax", counting)
    fused_loss(KDConfig(divergence="fkl", **GATES[gate]), rows=N)
    student_softmaxes = 2 if gate == "spec" else 1
    assert calls.count(False) == teacher_softmaxes + student_softmaxes - 1
    assert calls.count(True) == 1


def compiled(cfg: KDConfig, backend: str):
    """fused_loss with the chunk body compiled, checking that one graph really was compiled (dynamo
    falls back to eager without a word once a function has been recompiled too often)."""
    torch._dynamo.reset()
    counters.clear()
    out = fused_loss(cfg, rows=4, compile_backend=backend)
    assert counters["stats"]["unique_graphs"] >= 1
    return out


def test_every_chunk_reuses_one_compiled_graph():
    """The last chunk (3 of 11 rows) is padded to the chunk's 4 rows: one shape, one compile."""
    compiled(KDConfig(divergence="fkl", **GATES["topk"]), "aot_eager")
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("divergence", list(DIVERGENCES))
def test_compiled_chunk_body_equals_eager(divergence, gate):
    """The compiled graph (AOTAutograd's forward and backward, padded last chunk) gives the eager values
    and gradients; aot_eager runs that graph without generating kernels, so this needs no compiler."""
    cfg = KDConfig(divergence=divergence, **GATES[gate])
    assert_same_loss(compiled(cfg, "aot_eager"), fused_loss(cfg, rows=4))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on a CPU needs a C++ compiler (g++)")
@pytest.mark.parametrize(("divergence", "gate"), [("fkl", "topk"), ("jsd", "spec"), ("akl", "none")])
def test_inductor_chunk_body_equals_eager(divergence, gate):
    """The kernels inductor generates (here for the CPU) give the eager values and gradients."""
    cfg = KDConfig(divergence=divergence, **GATES[gate])
    assert_same_loss(compiled(cfg, "inductor"), fused_loss(cfg, rows=4), rel=1e-4)


def test_chunk_rows_shrink_when_free_memory_is_short(monkeypatch):
    import speckd_bench.loss.chunked_head as chunked_head

    cpu = torch.device("cpu")
    monkeypatch.setattr(chunked_head, "free_memory", lambda device: 1 << 40)
    assert chunk_rows(49152, device=cpu) == (1 << 25) // 49152  # plenty free: the logits target
    per_row = 4 * chunked_head.LOGIT_COPIES * 49152
    monkeypatch.setattr(chunked_head, "free_memory", lambda device: 4 * 100 * per_row)
    assert chunk_rows(49152, device=cpu) == 100  # a quarter of what is free holds 100 rows
    monkeypatch.setattr(chunked_head, "free_memory", lambda device: 0)
    assert chunk_rows(49152, device=cpu) == 1
    assert chunk_rows(49152, requested=64, device=cpu) == 64


def test_cpu_bf16_autocast_runs_the_student_in_bf16_and_leaves_the_warm_start_in_float32():
    from speckd_bench.config.run_config import RunConfig
    from speckd_bench.engine.warmstart import init_train_config

    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    micro = MicroBatch(collate([Example([3, 4, 5], list(range(6, 12)), "p", ["r"])], 0), [])
    dtypes: list[torch.dtype] = []
    mlp = student.model.layers[0].mlp.down_proj
    mlp.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    losses = {}
    for bf16 in (False, True):
        train = TrainConfig(cpu_bf16_autocast=bf16)
        losses[bf16] = micro_batch_loss(student, LiveTeacher(teacher), micro, KDConfig(), 40, train, None)
    assert dtypes == [torch.float32, torch.bfloat16]  # its matmuls ran in bf16
    assert losses[True].loss_sum.item() == pytest.approx(losses[False].loss_sum.item(), rel=0.05)
    assert losses[True].loss_sum.item() != losses[False].loss_sum.item()
    cfg = RunConfig()
    cfg.train.cpu_bf16_autocast = True
    assert init_train_config(cfg).cpu_bf16_autocast is False  # the shared init is trained in float32


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on a CPU needs a C++ compiler (g++)")
def test_train_compile_loss_on_gives_the_eager_step():
    """train.compile_loss=on through the trainer's own step: the gated KD step's loss and gradients."""
    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    rows = [Example([3, 4, 5], list(range(6, 6 + n)), "p", ["r"]) for n in (3, 9, 5)]
    cfg = KDConfig(divergence="jsd", **GATES["spec"])
    steps = {}
    torch._dynamo.reset()
    counters.clear()
    for compile_loss in ("off", "on"):
        model = copy.deepcopy(student)
        torch.manual_seed(SEED)  # the spec rule's draws come from the global generator here
        train = TrainConfig(compile_loss=compile_loss, fused_chunk_rows=4)
        stats = backward_step(model, LiveTeacher(teacher), [collate(rows, 0)], cfg, 40, train_cfg=train)
        steps[compile_loss] = (stats, [p.grad for p in model.parameters() if p.grad is not None])
    assert counters["stats"]["unique_graphs"] >= 1  # the step really ran compiled
    (eager, eager_grads), (compiled, compiled_grads) = steps["off"], steps["on"]
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-4)
    assert (compiled.n_tokens, compiled.n_accepted) == (eager.n_tokens, eager.n_accepted)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6)


def test_weight_gradient_sums_the_chunks_products_in_the_order_earlier_runs_used():
    """Bitwise: an in-place addmm_ rounds differently from product-then-sum, and a warm start trained
    either way is cached under the same key, so the order must not change silently."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1000, 64, generator=g, requires_grad=True)
    weight = torch.randn(8192, 64, generator=g, requires_grad=True)
    targets = torch.randint(0, 8192, (1000,), generator=g)
    fused_sft_loss_sum(OutputHead(hidden, weight, None, rows=682), targets).loss_sum.backward()
    want = torch.zeros_like(weight)
    for part in (slice(0, 682), slice(682, 1000)):
        logits = (hidden[part] @ weight.T).detach().requires_grad_()
        F.cross_entropy(logits, targets[part], reduction="sum").backward()
        want += logits.grad.T @ hidden[part].detach()
    assert torch.equal(weight.grad, want)
