"""Loss sums for one micro-batch. The train loop divides by the step's global denominator afterwards,
so gradient accumulation (and data parallelism) never changes the objective.

Each loss has a plain form (from logits) and a fused form (from hidden states and output weights,
chunked by chunked_head.chunked_head_loss); both run the same per-chunk code, so they agree to float rounding.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.config.run_config import TrainConfig
from speckd_bench.data.examples import IGNORE, Batch, Example
from speckd_bench.loss.chunk_body import TemperedLogProbs, chunk_body, pad_rows
from speckd_bench.loss.chunked_head import chunk_rows, chunked_head_loss
from speckd_bench.loss.divergences import DIVERGENCES
from speckd_bench.loss.gate import (
    CONTROL_GATES,
    ControlChunk,
    GateDraws,
    GateResult,
    control_gate,
    gate_result,
    speckd_gate,
)
from speckd_bench.models.loading import fusable, output_head, target_hidden, target_logits

TeacherLogits = Callable[[slice, torch.Tensor], torch.Tensor]
"""The teacher's float32 logits (or log-probabilities) at a slice of the micro-batch's target rows, given
the student's logits at those rows (a cached teacher shapes its unknown tail like the student's)."""

StudentLogits = Callable[[slice], torch.Tensor]
"""The student's float32 logits at a slice of the micro-batch's target rows, without gradient."""


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


@dataclass
class OutputHead:
    """A model's output layer cut to the shared vocabulary, with the hidden states at target rows."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    rows: int
    """Rows per chunk of the fused loss."""
    compile_backend: str | None = None
    """torch.compile backend of the per-chunk KD body (None: eager)."""

    def logits(self, part: slice) -> torch.Tensor:
        """The float32 logits at a slice of the target rows (as chunked_head_loss forms them), no grad."""
        return F.linear(self.hidden[part], self.weight, self.bias).float().detach()


class _KDChunks:
    """Per-chunk KD loss: divergence, times the gate's weights when on; counts accepted tokens on the way.

    The teacher's log-probabilities of a chunk are computed once per temperature and shared by the gate
    and the divergence. The gate's random numbers are drawn for all `n_rows` rows of the micro-batch up
    front; a control gate chooses its rows before the first chunk, from one no-grad pass over the chunks
    when it needs the models (`student` gives the student's logits there). `compile_backend` compiles the
    divergence body, padded to `rows` rows per chunk.
    """

    def __init__(
        self,
        teacher: TeacherLogits,
        cfg: KDConfig,
        generator: torch.Generator | None,
        student: StudentLogits,
        n_rows: int,
        device: torch.device,
        compile_backend: str | None = None,
        rows: int = 0,
    ):
        self.teacher, self.cfg, self.rows = teacher, cfg, rows
        self.draws = GateDraws.draw(n_rows, cfg, generator, device) if cfg.gate != "none" else None
        self.control = None
        if cfg.gate in CONTROL_GATES:
            self.control = control_gate(cfg, self.draws, n_rows, self._chunks(student, n_rows))
        params = tuple((k, float(getattr(cfg, k))) for k in DIVERGENCES.get(cfg.divergence).params)
        self.body = chunk_body(cfg.divergence, cfg.temperature, params, compile_backend)
        self.padded = compile_backend is not None
        self.accepted: torch.Tensor | int = 0
        self.divergence: torch.Tensor | float = 0.0

    def _chunks(self, student: StudentLogits, n_rows: int) -> Iterator[ControlChunk]:
        """The micro-batch's rows chunk by chunk with both models' logits (one empty chunk for no rows)."""
        step = max(1, self.rows or n_rows)
        for start in range(0, max(1, n_rows), step):
            part = slice(start, min(start + step, n_rows))
            logits = student(part)
            yield part, logits, TemperedLogProbs(self.teacher(part, logits))

    def _gate(self, logits: torch.Tensor, teacher: TemperedLogProbs, part: slice) -> GateResult | None:
        if self.control is not None:
            return gate_result(self.control[part], self.cfg.reject_weight)
        if self.draws is not None:
            return speckd_gate(logits.detach(), teacher, self.cfg, draws=self.draws.rows(part))
        return None

    def __call__(self, student_logits: torch.Tensor, part: slice) -> torch.Tensor:
        cfg = self.cfg
        teacher = TemperedLogProbs(self.teacher(part, student_logits.detach()))
        valid = torch.ones(student_logits.shape[0], device=student_logits.device)
        weights = valid
        gate = self._gate(student_logits, teacher, part)
        if gate is not None:
            self.accepted = self.accepted + gate.accepted.sum()
            weights = gate.weights
        else:
            self.accepted = self.accepted + student_logits.shape[0]
        inputs = (student_logits, teacher.at(cfg.temperature), weights, valid)
        if self.padded:
            uniform = -math.log(student_logits.shape[-1])
            inputs = tuple(pad_rows(t, self.rows, uniform if i == 1 else 0.0) for i, t in enumerate(inputs))
        loss, divergence = self.body(*inputs)
        self.divergence = self.divergence + divergence
        return loss

    def result(self, loss: torch.Tensor, n_tokens: int) -> LossSum:
        return LossSum(loss, n_tokens, int(self.accepted), float(self.divergence))


def sft_loss_sum(student_logits: torch.Tensor, targets: torch.Tensor) -> LossSum:
    """Cross-entropy summed over target tokens ([N, V] logits, [N] ids)."""
    loss = F.cross_entropy(student_logits.float(), targets, reduction="sum")
    n = int(targets.numel())
    return LossSum(loss, n, n, 0.0)


def fused_sft_loss_sum(head: OutputHead, targets: torch.Tensor) -> LossSum:
    """sft_loss_sum from hidden states, chunk by chunk."""

    def chunk(logits: torch.Tensor, part: slice) -> torch.Tensor:
        return F.cross_entropy(logits, targets[part], reduction="sum")

    loss = chunked_head_loss(head.hidden, head.weight, head.bias, chunk, head.rows)
    n = int(targets.numel())
    return LossSum(loss, n, n, 0.0)


def kd_loss_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    cfg: KDConfig,
    generator: torch.Generator | None = None,
) -> LossSum:
    """sum_t w_t * D(p_T || p_S)_t, where w is cfg.gate's weights (1 without a gate)."""
    n, device = student_logits.shape[0], student_logits.device
    student = student_logits.detach().float()
    chunks = _KDChunks(
        lambda part, _: teacher_logits[part], cfg, generator, lambda part: student[part], n, device
    )
    loss = chunks(student_logits.float(), slice(None))
    return chunks.result(loss, int(student_logits.shape[0]))


def fused_kd_loss_sum(
    head: OutputHead,
    teacher: TeacherLogits,
    cfg: KDConfig,
    generator: torch.Generator | None = None,
) -> LossSum:
    """kd_loss_sum from the student's hidden states, chunk by chunk; the teacher's logits are asked
    for one chunk at a time too."""
    n, device = head.hidden.shape[0], head.hidden.device
    chunks = _KDChunks(teacher, cfg, generator, head.logits, n, device, head.compile_backend, head.rows)
    loss = chunked_head_loss(head.hidden, head.weight, head.bias, chunks, head.rows)
    return chunks.result(loss, int(head.hidden.shape[0]))


@dataclass
class MicroBatch:
    batch: Batch
    """On the training device."""
    rows: list[Example]
    """The examples it was built from (a cached teacher finds its rows by them)."""


class TeacherSource(Protocol):
    def logits(self, micro: MicroBatch, vocab: int) -> TeacherLogits:
        """The teacher's logits (or log-probabilities) of the micro-batch's target rows, by slice."""
        ...


class LiveTeacher:
    """The teacher model itself: one forward pass per micro-batch whose output layer runs per slice of
    the target rows (never all rows at once) when the model allows it."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @torch.no_grad()
    def logits(self, micro: MicroBatch, vocab: int) -> TeacherLogits:
        model, batch = self.model, micro.batch
        if not fusable(model):
            logits = target_logits(model, batch, vocab)
            return lambda part, _: logits[part]
        hidden = target_hidden(model, batch)
        weight, bias = output_head(model, vocab)
        return lambda part, _: F.linear(hidden[part], weight, bias).float()


def compile_backend(train_cfg: TrainConfig, device: torch.device) -> str | None:
    """train.compile_loss resolved on `device`: inductor when on (auto: on CUDA), else None (eager)."""
    on = train_cfg.compile_loss == "on" or (train_cfg.compile_loss == "auto" and device.type == "cuda")
    return "inductor" if on else None


def autocast_for(train_cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, and on a CPU when train.cpu_bf16_autocast; else no autocast (float32)."""
    if device.type == "cuda" or train_cfg.cpu_bf16_autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _student_head(student: Any, batch: Batch, vocab: int, train_cfg: TrainConfig) -> OutputHead:
    weight, bias = output_head(student, vocab)
    device = batch.input_ids.device
    rows = chunk_rows(vocab, train_cfg.fused_chunk_rows, device)
    return OutputHead(target_hidden(student, batch), weight, bias, rows, compile_backend(train_cfg, device))


def micro_batch_loss(
    student: Any,
    teacher: TeacherSource | None,
    micro: MicroBatch,
    mcfg: MethodConfig,
    vocab: int,
    train_cfg: TrainConfig,
    generator: torch.Generator | None,
) -> LossSum:
    """The loss sum of one micro-batch: cross-entropy without a teacher, else the (gated) divergence of
    mcfg (a KDConfig), under autocast_for(train_cfg). train.fused_loss computes it chunk by chunk from the
    student's hidden states (where the model allows it)."""
    batch = micro.batch
    fused = train_cfg.fused_loss and fusable(student)
    with autocast_for(train_cfg, batch.input_ids.device):
        if teacher is None:
            targets = batch.labels[batch.labels != IGNORE]
            if fused:
                return fused_sft_loss_sum(_student_head(student, batch, vocab, train_cfg), targets)
            return sft_loss_sum(target_logits(student, batch, vocab), targets)
        teacher_logits = teacher.logits(micro, vocab)
        if fused:
            head = _student_head(student, batch, vocab, train_cfg)
            return fused_kd_loss_sum(head, teacher_logits, mcfg, generator)
        s_logits = target_logits(student, batch, vocab)
        return kd_loss_sum(s_logits, teacher_logits(slice(None), s_logits.detach()), mcfg, generator)
