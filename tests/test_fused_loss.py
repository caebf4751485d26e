"""The fused, chunked loss gives the plain loss's values and gradients for every divergence, gated or not."""

import pytest
import torch
import torch.nn.functional as F

from speckd_bench.loss.chunked_head import chunk_rows, chunked_head_loss
from speckd_bench.loss.divergences import DIVERGENCES
from speckd_bench.loss.gate import speckd_gate
from speckd_bench.loss.objective import (
    OutputHead,
    fused_kd_loss_sum,
    fused_sft_loss_sum,
    kd_loss_sum,
    sft_loss_sum,
)
from speckd_bench.method_config import KDConfig

N, H, V = 11, 6, 17
GATES = {
    "none": {},
    "topk": {"gate": "speckd", "rule": "topk", "k": 3, "reject_weight": 0.1},
    "prob": {"gate": "speckd", "rule": "prob", "tau": 0.05},
}


def inputs(seed: int = 0, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    teacher = 2 * torch.randn(N, V, generator=g, dtype=torch.float64)
    return hidden, weight, b, teacher


def float64_reference(hidden, weight, bias, teacher, cfg: KDConfig):
    """sum_t w_t D_t computed in float64 straight from the divergence's own function."""
    hidden, weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logits = F.linear(hidden, weight, bias)
    div = DIVERGENCES.get(cfg.divergence)
    params = {k: getattr(cfg, k) for k in div.params}
    per_token = div.fn(torch.log_softmax(logits, -1), torch.log_softmax(teacher, -1), **params)
    weights = torch.ones(N, dtype=torch.float64)
    if cfg.gate == "speckd":
        weights = speckd_gate(logits.detach(), teacher, cfg).weights.double()
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
    fused = fused_kd_loss_sum(OutputHead(h, w, b, rows=4), lambda part, _: teacher[part], cfg)
    (2.0 * fused.loss_sum).backward()  # the outer scale reaches every stored gradient

    hp, wp, bp = (t.detach().clone().requires_grad_() for t in (h, w, b))
    plain = kd_loss_sum(F.linear(hp, wp, bp), teacher, cfg)
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
