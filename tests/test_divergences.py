"""Per-token divergences against float64 hand computations and known identities."""

import math

import pytest
import torch

from speckd_bench.loss.divergences import DIVERGENCES, per_token_divergence

P = [0.7, 0.2, 0.1]
Q = [0.5, 0.3, 0.2]
# Five tokens where the teacher's head (mu=0.5) is two tokens and the gaps differ between head and tail.
P5 = [0.3, 0.25, 0.2, 0.15, 0.1]
Q5 = [0.1, 0.4, 0.1, 0.1, 0.3]


def logits(probs):
    return torch.tensor([probs]).log()


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def mix(a, b, w):
    return [w * x + (1 - w) * y for x, y in zip(a, b, strict=True)]


def akl_by_hand(p, q, mu):
    order = sorted(range(len(p)), key=lambda i: -p[i])
    head, mass = set(), 0.0
    for i in order:
        if mass >= mu:
            break
        head.add(i)
        mass += p[i]
    g_head = sum(abs(p[i] - q[i]) for i in head)
    g_tail = sum(abs(p[i] - q[i]) for i in range(len(p)) if i not in head)
    return (g_head * kl(p, q) + g_tail * kl(q, p)) / (g_head + g_tail)


# name: (params, float64 value of D(p_T = p || p_S = q))
HAND = {
    "fkl": ({}, lambda p, q: kl(p, q)),
    "rkl": ({}, lambda p, q: kl(q, p)),
    "jsd": (
        {"beta": 0.3},
        lambda p, q: 0.3 * kl(p, mix(p, q, 0.3)) + 0.7 * kl(q, mix(p, q, 0.3)),
    ),
    "tvd": ({}, lambda p, q: 0.5 * sum(abs(x - y) for x, y in zip(p, q, strict=True))),
    "sfkl": ({"alpha": 0.1}, lambda p, q: kl(p, mix(p, q, 0.1))),
    "srkl": ({"alpha": 0.1}, lambda p, q: kl(q, mix(q, p, 0.1))),
    "akl": ({"mu": 0.5}, lambda p, q: akl_by_hand(p, q, 0.5)),
}


def test_every_registered_divergence_has_a_hand_computation():
    assert set(DIVERGENCES) == set(HAND)


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize(("p", "q"), [(P, Q), (P5, Q5)], ids=["v3", "v5"])
def test_matches_float64_hand_computation(name, p, q):
    params, by_hand = HAND[name]
    got = per_token_divergence(name, logits(q), logits(p), **params).item()
    assert got == pytest.approx(by_hand(p, q), abs=1e-6)


def test_fkl_hand_value_is_what_we_think():
    assert kl(P, Q) == pytest.approx(0.0851, abs=1e-4)
    # The akl head of P5 at mu=0.5 is tokens 0 and 1: gaps 0.35 (head) and 0.35 (tail).
    assert akl_by_hand(P5, Q5, 0.5) == pytest.approx(0.5 * kl(P5, Q5) + 0.5 * kl(Q5, P5))


@pytest.mark.parametrize("name", sorted(HAND))
def test_temperature_scales_both_distributions(name):
    torch.manual_seed(3)
    s, t = torch.randn(4, 9), torch.randn(4, 9)
    params = HAND[name][0]
    scaled = per_token_divergence(name, s, t, temperature=2.0, **params)
    assert torch.allclose(scaled, per_token_divergence(name, s / 2, t / 2, **params), atol=1e-6)


def test_jsd_endpoints_are_the_limits_of_fkl_and_rkl():
    s, t = logits(Q5), logits(P5)
    eps = 1e-3
    fkl, rkl = kl(P5, Q5), kl(Q5, P5)
    assert per_token_divergence("jsd", s, t, beta=eps).item() / eps == pytest.approx(fkl, rel=2e-2)
    assert per_token_divergence("jsd", s, t, beta=1 - eps).item() / eps == pytest.approx(rkl, rel=2e-2)
    assert per_token_divergence("jsd", s, t, beta=0.0).item() == pytest.approx(fkl, abs=1e-6)
    assert per_token_divergence("jsd", s, t, beta=1.0).item() == pytest.approx(rkl, abs=1e-6)


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_identical_distributions_give_zero_and_random_ones_are_nonnegative(name):
    torch.manual_seed(0)
    a = torch.randn(16, 50)
    assert per_token_divergence(name, a, a.clone()).abs().max().item() < 1e-5
    b = torch.randn(16, 50) * 3
    assert (per_token_divergence(name, a, b) >= -1e-6).all()


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_gradients_are_finite_and_vanish_at_the_teacher(name):
    torch.manual_seed(2)
    t = torch.randn(6, 20) * 2
    s = torch.randn(6, 20, requires_grad=True)
    per_token_divergence(name, s, t).sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    if name != "tvd":  # |p - q| has no gradient at 0; every smooth divergence is stationary there
        s2 = t.clone().requires_grad_(True)
        per_token_divergence(name, s2, t).sum().backward()
        assert s2.grad.abs().max() < 1e-5


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
