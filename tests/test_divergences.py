"""Per-token divergences against float64 hand computations and known identities."""

import math

import pytest
import torch

from speckd_bench.divergences import DIVERGENCES, per_token_divergence

P = [0.7, 0.2, 0.1]
Q = [0.5, 0.3, 0.2]


def logits(probs):
    return torch.tensor([probs]).log()


def test_fkl_on_three_tokens_matches_hand_value():
    expected = sum(p * math.log(p / q) for p, q in zip(P, Q, strict=False))
    got = per_token_divergence("fkl", logits(Q), logits(P))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.0851, abs=1e-4)


def test_rkl_and_tvd_hand_values():
    rkl = sum(q * math.log(q / p) for p, q in zip(P, Q, strict=False))
    assert per_token_divergence("rkl", logits(Q), logits(P)).item() == pytest.approx(rkl, abs=1e-6)
    assert per_token_divergence("tvd", logits(Q), logits(P)).item() == pytest.approx(0.2, abs=1e-6)


def test_jsd_mixture_hand_value_and_endpoints():
    beta = 0.3
    m = [beta * p + (1 - beta) * q for p, q in zip(P, Q, strict=False)]
    expected = beta * sum(p * math.log(p / mi) for p, mi in zip(P, m, strict=False)) + (1 - beta) * sum(
        q * math.log(q / mi) for q, mi in zip(Q, m, strict=False)
    )
    s, t = logits(Q), logits(P)
    assert per_token_divergence("jsd", s, t, beta=beta).item() == pytest.approx(expected, abs=1e-6)
    assert per_token_divergence("jsd", s, t, beta=0.0).item() == pytest.approx(
        per_token_divergence("fkl", s, t).item(), abs=1e-7
    )
    assert per_token_divergence("jsd", s, t, beta=1.0).item() == pytest.approx(
        per_token_divergence("rkl", s, t).item(), abs=1e-7
    )


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_identical_distributions_give_zero_and_random_ones_are_nonnegative(name):
    torch.manual_seed(0)
    a = torch.randn(16, 50)
    assert per_token_divergence(name, a, a.clone()).abs().max().item() < 1e-5
    b = torch.randn(16, 50) * 3
    assert (per_token_divergence(name, a, b) >= -1e-6).all()


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_masked_vocabulary_gives_finite_values_and_gradients(name):
    torch.manual_seed(1)
    s = torch.randn(4, 10)
    s[:, -3:] = float("-inf")
    s.requires_grad_(True)
    t = torch.randn(4, 10)
    t[:, -3:] = float("-inf")
    value = per_token_divergence(name, s, t).sum()
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(s.grad).all()
