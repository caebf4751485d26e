"""The per-chunk body of the KD loss: the teacher's log-probabilities computed once per temperature and
shared by the gate and the divergence, and the weighted divergence itself, eager or compiled.

The compiled body (torch.compile, dynamic=False) fuses the chunk's elementwise work (the student's
log-softmax, the divergence, the gate weights, the sums) into a few kernels, forward and backward. It is
compiled once per chunk shape and reused, so every chunk is padded to the same number of rows: padded rows
carry weight 0 and count nowhere. The eager body is the same function, uncompiled: the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from speckd_bench.loss.divergences import DIVERGENCES

Tensor = torch.Tensor
ChunkBody = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""(student logits [c, V] with grad, teacher log-probs [c, V], gate weights [c], valid rows [c]) ->
(the weighted divergence summed over rows, differentiable; the unweighted divergence summed over the valid
rows, detached)."""


class TemperedLogProbs:
    """log_softmax(logits / T) of one chunk's float32 logits, computed once per temperature T (no grad)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.detach()
        self._by_temperature: dict[float, torch.Tensor] = {}

    @torch.no_grad()
    def at(self, temperature: float) -> torch.Tensor:
        if temperature not in self._by_temperature:
            scaled = self.logits.float() / temperature
            self._by_temperature[temperature] = torch.log_softmax(scaled, dim=-1)
        return self._by_temperature[temperature]


def _body(divergence: str, temperature: float, params: tuple[tuple[str, float], ...]) -> ChunkBody:
    fn, kwargs = DIVERGENCES.get(divergence).fn, dict(params)

    def weighted_divergence(
        student_logits: torch.Tensor, teacher_logp: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logq = torch.log_softmax(student_logits / temperature, dim=-1)
        per_token = fn(logq, teacher_logp, **kwargs)
        return (weights * per_token).sum(), (valid * per_token).detach().sum()

    return weighted_divergence


@functools.cache
def chunk_body(
    divergence: str, temperature: float, params: tuple[tuple[str, float], ...], compile_backend: str | None
) -> ChunkBody:
    """The body for one divergence, temperature and parameter set; compiled with `compile_backend`
    (e.g. "inductor") when given. Cached: the same settings get the same (compiled) function back."""
    body = _body(divergence, temperature, params)
    if compile_backend is None:
        return body
    return torch.compile(body, backend=compile_backend, dynamic=False)


def pad_rows(t: torch.Tensor, rows: int, value: float = 0.0) -> torch.Tensor:
    """`t` ([c, ...]) with rows - c rows of `value` appended (itself when it has `rows` rows)."""
    missing = rows - t.shape[0]
    if missing <= 0:
        return t
    return F.pad(t, (0, 0) * (t.dim() - 1) + (0, missing), value=value)
