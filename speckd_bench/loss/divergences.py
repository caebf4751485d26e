"""Per-token divergences between teacher p and student q over the vocabulary.

Every function takes student and teacher log-probabilities [N, V] (already temperature-scaled and
float32) and returns a per-token value [N]. Masked vocabulary entries (-inf logits) contribute nothing
and produce no NaN; mixtures are formed with logsumexp of log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from speckd_bench.registry import Registry


@dataclass(frozen=True)
class Divergence:
    name: str
    description: str
    fn: Callable[..., torch.Tensor]
    params: tuple[str, ...] = ()
    """Names of MethodConfig fields the divergence reads (beta, alpha, mu)."""


DIVERGENCES: Registry[Divergence] = Registry("divergence")


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per row; terms where a == 0 are exactly 0 (and have finite gradients)."""
    a = log_a.exp()
    diff = torch.where(a > 0, log_a - log_b, torch.zeros_like(log_a))
    return (a * diff).sum(-1)


def _mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(weight_a * a + (1 - weight_a) * b) in log space; entries where both are -inf stay -inf with
    zero gradient (a plain logsumexp gives NaN gradients there).
    """
    a = log_a + (math.log(weight_a) if weight_a > 0 else -math.inf)
    b = log_b + (math.log1p(-weight_a) if weight_a < 1 else -math.inf)
    both = torch.isneginf(a) & torch.isneginf(b)
    return torch.logaddexp(a.masked_fill(both, 0.0), b.masked_fill(both, 0.0)).masked_fill(both, -math.inf)


def fkl(logq: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    return kl(logp, logq)


def rkl(logq: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    return kl(logq, logp)


def jsd(logq: torch.Tensor, logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalised JSD in TRL's convention: beta KL(p||m) + (1-beta) KL(q||m), m = beta p + (1-beta) q.

    The endpoints are defined as the limits of jsd/beta and jsd/(1-beta): beta=0 is forward KL(p||q),
    beta=1 is reverse KL(q||p).
    """
    if beta == 0.0:
        return fkl(logq, logp)
    if beta == 1.0:
        return rkl(logq, logp)
    logm = _mix(logp, logq, beta)
    return beta * kl(logp, logm) + (1.0 - beta) * kl(logq, logm)


def tvd(logq: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)


def sfkl(logq: torch.Tensor, logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """DistiLLM skew forward KL: KL(p || alpha p + (1-alpha) q)."""
    return kl(logp, _mix(logp, logq, alpha))


def srkl(logq: torch.Tensor, logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """DistiLLM skew reverse KL: KL(q || alpha q + (1-alpha) p)."""
    return kl(logq, _mix(logq, logp, alpha))


def akl(logq: torch.Tensor, logp: torch.Tensor, mu: float = 0.5) -> torch.Tensor:
    """Adaptive KL (Wu et al. 2024): g_head/(g) * FKL + g_tail/(g) * RKL.

    The head is the smallest set of the teacher's top tokens whose cumulative probability reaches mu;
    g_head and g_tail are the summed |p - q| over head and tail, treated as constants (no gradient).
    """
    with torch.no_grad():
        p, q = logp.exp(), logq.exp()
        sorted_p, order = p.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p
        head_sorted = before < mu
        head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
        gap = (p - q).abs()
        g_head = (gap * head).sum(-1)
        g_tail = (gap * ~head).sum(-1)
        total = (g_head + g_tail).clamp_min(torch.finfo(gap.dtype).tiny)
    return g_head / total * fkl(logq, logp) + g_tail / total * rkl(logq, logp)


for _div in (
    Divergence("fkl", "forward KL(p||q), word-level KD (Hinton et al. 2015)", fkl),
    Divergence("rkl", "reverse KL(q||p), mode-seeking (MiniLLM)", rkl),
    Divergence("jsd", "generalised Jensen-Shannon, TRL convention (beta 0 = fkl, 1 = rkl)", jsd, ("beta",)),
    Divergence("tvd", "total variation distance", tvd),
    Divergence("sfkl", "skew forward KL (DistiLLM)", sfkl, ("alpha",)),
    Divergence("srkl", "skew reverse KL (DistiLLM)", srkl, ("alpha",)),
    Divergence("akl", "adaptive KL: head/tail-gap weighted fkl + rkl (Wu et al. 2024)", akl, ("mu",)),
):
    DIVERGENCES.register(_div.name, _div)


def per_token_divergence(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    **params: float,
) -> torch.Tensor:
    """Divergence `name` per row of [N, V] logits, in float32 after temperature scaling."""
    div = DIVERGENCES.get(name)
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return div.fn(logq, logp, **{k: params[k] for k in div.params if k in params})
