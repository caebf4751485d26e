"""SpecKD's acceptance gate: the student proposes a token at each position, the teacher verifies it; the
per-token weights are 1 where accepted and `reject_weight` where rejected. The gate is a mask: no
gradient flows through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speckd_bench.api.method_config import KDConfig
from speckd_bench.loss.chunk_body import TemperedLogProbs


@dataclass
class GateResult:
    weights: torch.Tensor
    """[N] float32: 1 for accepted positions, reject_weight for rejected ones."""
    accepted: torch.Tensor
    """[N] bool."""


@dataclass
class GateDraws:
    """The gate's uniform random numbers, one per row and use, drawn for a whole micro-batch at once so
    that the gate does not depend on how its rows are chunked (fused or plain loss, any chunk size)."""

    propose: torch.Tensor | None
    """[N] uniforms of sampled proposals (None with greedy proposals)."""
    accept: torch.Tensor | None
    """[N] uniforms of the spec rule's acceptance test (None for the other rules)."""

    @classmethod
    def draw(
        cls, n: int, cfg: KDConfig, generator: torch.Generator | None, device: torch.device
    ) -> GateDraws:
        def uniforms(needed: bool) -> torch.Tensor | None:
            return torch.rand(n, generator=generator, device=device) if needed else None

        return cls(uniforms(cfg.propose == "sample"), uniforms(cfg.rule == "spec"))

    def rows(self, part: slice) -> GateDraws:
        return GateDraws(*(None if u is None else u[part] for u in (self.propose, self.accept)))


@torch.no_grad()
def propose(student_logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None) -> torch.Tensor:
    """The student's token at each position: its argmax (uniforms None), else a sample at the given
    temperature by inverting its cumulative distribution at one uniform per row."""
    if uniforms is None:
        return student_logits.argmax(-1)
    cdf = torch.softmax(student_logits.float() / temperature, dim=-1).cumsum(-1)
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return picked.clamp_max(cdf.shape[-1] - 1)


@torch.no_grad()
def speckd_gate(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TemperedLogProbs,
    cfg: KDConfig,
    generator: torch.Generator | None = None,
    draws: GateDraws | None = None,
) -> GateResult:
    """Accept or reject the student's proposal at each of N positions ([N, V] logits).

    `teacher`: its logits, or its TemperedLogProbs when the divergence shares them. The random numbers
    are `draws` (a chunk's rows of the micro-batch's), else drawn here from `generator`. Probabilities of
    the spec and prob rules are taken at the student's sampling temperature (cfg.gen_temperature), the
    one sampled proposals come from.
    """
    if isinstance(teacher, torch.Tensor):
        teacher = TemperedLogProbs(teacher)
    if draws is None:
        draws = GateDraws.draw(student_logits.shape[0], cfg, generator, student_logits.device)
    temperature = cfg.gen_temperature
    proposal = propose(student_logits, temperature, draws.propose)
    if cfg.rule == "topk":
        k = min(cfg.k, teacher.logits.shape[-1])
        accepted = (teacher.logits.topk(k, dim=-1).indices == proposal[:, None]).any(-1)
    else:
        logp_y = teacher.at(temperature).gather(-1, proposal[:, None]).squeeze(-1)
        if cfg.rule == "prob":
            accepted = logp_y.exp() >= cfg.tau
        elif cfg.rule == "spec":
            logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
            logq_y = logq.gather(-1, proposal[:, None]).squeeze(-1)
            accepted = draws.accept.log() <= logp_y - logq_y
        else:
            raise ValueError(f"unknown SpecKD rule {cfg.rule!r}")
    weights = torch.where(accepted, 1.0, float(cfg.reject_weight)).float()
    return GateResult(weights=weights, accepted=accepted)
