"""Loss sums for one micro-batch. The train loop divides by the step's global denominator afterwards,
so gradient accumulation (and data parallelism) never changes the objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from speckd_bench.config import MethodConfig
from speckd_bench.divergences import per_token_divergence
from speckd_bench.speckd import speckd_gate


@dataclass
class LossSum:
    loss_sum: torch.Tensor
    """Sum over target tokens of the (weighted) per-token loss; differentiable."""
    n_tokens: int
    """Target tokens in the micro-batch."""
    n_accepted: int
    """Tokens the gate accepted (n_tokens when there is no gate)."""
    divergence_sum: float
    """Unweighted divergence summed over all target tokens (0 for SFT), for logging."""


def sft_loss_sum(student_logits: torch.Tensor, targets: torch.Tensor) -> LossSum:
    """Cross-entropy summed over target tokens ([N, V] logits, [N] ids)."""
    loss = F.cross_entropy(student_logits.float(), targets, reduction="sum")
    n = int(targets.numel())
    return LossSum(loss, n, n, 0.0)


def kd_loss_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    cfg: MethodConfig,
    generator: torch.Generator | None = None,
) -> LossSum:
    """sum_t w_t * D(p_T || p_S)_t, where w is SpecKD's gate when cfg.gate == 'speckd', else 1."""
    per_token = per_token_divergence(
        cfg.divergence,
        student_logits,
        teacher_logits,
        cfg.temperature,
        beta=cfg.beta,
        alpha=cfg.alpha,
        mu=cfg.mu,
    )
    n = int(per_token.numel())
    if cfg.gate == "speckd":
        gate = speckd_gate(student_logits.detach(), teacher_logits, cfg, generator)
        loss = (gate.weights * per_token).sum()
        accepted = int(gate.accepted.sum())
    else:
        loss, accepted = per_token.sum(), n
    return LossSum(loss, n, accepted, float(per_token.detach().sum()))
