"""SpecKD's acceptance gate: the student proposes a token at each position, the teacher verifies it; the
per-token weights are 1 where accepted and `reject_weight` where rejected. The gate is a mask: no
gradient flows through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speckd_bench.method_config import KDConfig


@dataclass
class GateResult:
    weights: torch.Tensor
    """[N] float32: 1 for accepted positions, reject_weight for rejected ones."""
    accepted: torch.Tensor
    """[N] bool."""


@torch.no_grad()
def propose(student_logits: torch.Tensor, how: str, temperature: float, generator: torch.Generator | None):
    """The student's token at each position: argmax, or a sample at the given temperature."""
    if how == "greedy":
        return student_logits.argmax(-1)
    probs = torch.softmax(student_logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def speckd_gate(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    cfg: KDConfig,
    generator: torch.Generator | None = None,
) -> GateResult:
    """Accept or reject the student's proposal at each of N positions ([N, V] logits).

    Probabilities of the spec and prob rules are taken at the student's sampling temperature
    (cfg.gen_temperature), the one sampled proposals come from.
    """
    temperature = cfg.gen_temperature
    proposal = propose(student_logits, cfg.propose, temperature, generator)
    if cfg.rule == "topk":
        k = min(cfg.k, teacher_logits.shape[-1])
        accepted = (teacher_logits.topk(k, dim=-1).indices == proposal[:, None]).any(-1)
    else:
        logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
        logp_y = logp.gather(-1, proposal[:, None]).squeeze(-1)
        if cfg.rule == "prob":
            accepted = logp_y.exp() >= cfg.tau
        elif cfg.rule == "spec":
            logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
            logq_y = logq.gather(-1, proposal[:, None]).squeeze(-1)
            u = torch.rand(proposal.shape, generator=generator, device=proposal.device)
            accepted = u.log() <= logp_y - logq_y
        else:
            raise ValueError(f"unknown SpecKD rule {cfg.rule!r}")
    weights = torch.where(accepted, 1.0, float(cfg.reject_weight)).float()
    return GateResult(weights=weights, accepted=accepted)
