"""The gates of the KD loss: per-token weights, 1 where a gate accepts a target token and `reject_weight`
where it rejects it. A gate is a mask: no gradient flows through it.

SpecKD's gate: the student proposes a token at each position, the teacher verifies it. Two control gates
weight tokens the same way but choose them otherwise, to tell "the gate picks the right tokens" from "the
loss sees fewer tokens": `random` accepts a random subset of a micro-batch's target tokens, `confidence`
the tokens where the teacher's entropy is lowest. Each accepts round(gate_rate * N) of the N tokens, or with
gate_match as many as SpecKD's rule accepts on the same micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from speckd_bench.api.method_config import KDConfig
from speckd_bench.loss.chunk_body import TemperedLogProbs

CONTROL_GATES = ("random", "confidence")

ControlChunk = tuple[slice, torch.Tensor, TemperedLogProbs]
"""One chunk of a micro-batch's target rows: their slice, the student's logits there (no grad), the
teacher's log-probabilities."""


@dataclass
class GateResult:
    weights: torch.Tensor
    """[N] float32: 1 for accepted positions, reject_weight for rejected ones."""
    accepted: torch.Tensor
    """[N] bool."""


def gate_result(accepted: torch.Tensor, reject_weight: float) -> GateResult:
    """The weights of every gate: 1 where `accepted`, `reject_weight` elsewhere."""
    return GateResult(torch.where(accepted, 1.0, float(reject_weight)).float(), accepted)


def uses_speckd_rule(cfg: KDConfig) -> bool:
    """SpecKD's rule runs unless the gate is a control gate with a fixed rate."""
    return cfg.gate not in CONTROL_GATES or cfg.gate_match


@dataclass
class GateDraws:
    """The gate's uniform random numbers, one per row and use, drawn for a whole micro-batch at once so
    that the gate does not depend on how its rows are chunked (fused or plain loss, any chunk size)."""

    propose: torch.Tensor | None
    """[N] uniforms of sampled proposals (None with greedy proposals)."""
    accept: torch.Tensor | None
    """[N] uniforms of the spec rule's acceptance test (None for the other rules)."""
    order: torch.Tensor | None = None
    """[N] uniforms whose smallest values the random gate accepts (None for the other gates)."""

    @classmethod
    def draw(
        cls, n: int, cfg: KDConfig, generator: torch.Generator | None, device: torch.device
    ) -> GateDraws:
        """SpecKD's rule's draws (when uses_speckd_rule), then the random gate's."""

        def uniforms(needed: bool) -> torch.Tensor | None:
            return torch.rand(n, generator=generator, device=device) if needed else None

        rule = uses_speckd_rule(cfg)
        propose = uniforms(rule and cfg.propose == "sample")
        accept = uniforms(rule and cfg.rule == "spec")
        return cls(propose, accept, uniforms(cfg.gate == "random"))

    def rows(self, part: slice) -> GateDraws:
        return GateDraws(*(None if u is None else u[part] for u in (self.propose, self.accept, self.order)))


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
    return gate_result(accepted, cfg.reject_weight)


@torch.no_grad()
def control_gate(cfg: KDConfig, draws: GateDraws, n: int, chunks: Iterable[ControlChunk]) -> torch.Tensor:
    """[N] bool: the rows of a micro-batch of N target rows that a control gate accepts.

    `draws` are the micro-batch's; `chunks` its rows, read (once) only when the gate needs the models: for
    SpecKD's count (gate_match) or the teacher's entropy (the confidence gate, at cfg.temperature, the
    divergence's). The random gate accepts the rows of the smallest `draws.order`, a uniformly random subset.
    """
    speckd_accepted, entropy = 0, []
    if cfg.gate_match or cfg.gate == "confidence":
        for part, student_logits, teacher in chunks:
            if cfg.gate_match:
                gate = speckd_gate(student_logits, teacher, cfg, draws=draws.rows(part))
                speckd_accepted += int(gate.accepted.sum())
            if cfg.gate == "confidence":
                entropy.append(torch.special.entr(teacher.at(cfg.temperature).exp()).sum(-1))
    count = speckd_accepted if cfg.gate_match else round(cfg.gate_rate * n)
    keys = draws.order if cfg.gate == "random" else torch.cat(entropy)
    return lowest(keys, count)


def lowest(keys: torch.Tensor, count: int) -> torch.Tensor:
    """[N] bool: True at the `count` rows of smallest `keys` (ties: the earlier row)."""
    accepted = torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    accepted[keys.argsort(stable=True)[:count]] = True
    return accepted
