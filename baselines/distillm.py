"""DistiLLM (Ko et al., ICML 2024): skew reverse KL (alpha 0.1) with the adaptive off-policy schedule.

Each micro-batch draws r ~ U(0, 1) against a probability p (start 0). With r < p * (1 - step/total), or
r < p while the replay buffer is not yet full, the student samples fresh responses for the batch's prompts
(temperature 1, top-p 1), which also go into the buffer; with r < p otherwise, a batch is replayed from
the full buffer; else the ground truth is used. The student's validation loss (cross-entropy on held-out
rows) is measured before training and every `replay_eval_every` steps; whenever it has risen by
`replay_loss_eps` over the reference value, p grows by 0.1 (at most 1) and the reference moves up to it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from speckd_bench.api.method_config import StudentRolloutConfig
from speckd_bench.api.methods import DataPolicy, Method, PolicyContext, register_method
from speckd_bench.api.settings import finite, setting
from speckd_bench.data.examples import IGNORE, Batch, Example, build_examples, collate
from speckd_bench.data.rows import load_rows
from speckd_bench.errors import UserError
from speckd_bench.loss.objective import sft_loss_sum
from speckd_bench.methods import rollout
from speckd_bench.models.loading import target_logits

PROB_STEP = 0.1
STUDENT, REPLAY, GROUND_TRUTH = "student", "replay", "ground_truth"


@dataclass
class DistiLLMConfig(StudentRolloutConfig):
    divergence: str = "srkl"
    replay_init_prob: float = setting(
        0.0,
        "initial probability of an off-policy (student-generated) micro-batch",
        check=finite(0.0, 1.0),
        expected="replay_init_prob in [0, 1]",
    )
    replay_loss_eps: float = setting(
        0.1,
        "the probability rises by 0.1 when validation loss exceeds its reference by this much",
        check=finite(0.0),
        expected="replay_loss_eps >= 0",
    )
    replay_eval_every: int = setting(
        4, "optimiser steps between validation-loss checks", check=lambda v: v >= 1, expected=">= 1"
    )
    replay_val_rows: int = setting(
        32,
        "validation rows, taken from the train split right after the training rows",
        check=lambda v: v >= 1,
        expected="replay_val_rows >= 1",
    )
    replay_capacity: int = setting(
        1000,
        "replay buffer size in sequences; replayed batches are drawn once it is full",
        check=lambda v: v >= 1,
        expected="replay_capacity >= 1",
    )


@dataclass
class AdaptiveSchedule:
    """DistiLLM's adaptive off-policy probability."""

    prob: float
    loss_eps: float
    capacity: int
    reference: float | None = None
    """Validation loss the next rise is measured from (first value, then the value at each rise)."""

    def observe(self, val_loss: float) -> None:
        if self.reference is None:
            self.reference = val_loss
        elif val_loss >= self.reference + self.loss_eps:
            self.prob = min(1.0, self.prob + PROB_STEP)
            self.reference = val_loss

    def source(self, r: float, step: int, total_steps: int, buffered: int) -> str:
        """Where a micro-batch of optimiser step `step` (1-based) comes from, for a uniform draw r."""
        fresh = self.prob * (1.0 - step / total_steps)
        if r < fresh or (r < self.prob and buffered < self.capacity):
            return STUDENT
        return REPLAY if r < self.prob else GROUND_TRUTH


def validation_examples(ctx: PolicyContext) -> list[Example]:
    """Rows of the train split right after the training rows (never trained on, never scored)."""
    cfg = ctx.cfg
    rows = load_rows(ctx.task, "train", cfg.data)
    start = min(cfg.data.max_train_examples, len(rows))
    held_out = rows[start : start + cfg.method.replay_val_rows]
    if not held_out:
        raise UserError(
            f"distillm needs validation rows after the training rows, but task {ctx.task.name}'s train split "
            f"has only {len(rows)} rows; lower data.max_train_examples"
        )
    return build_examples(ctx.task, held_out, ctx.tokenizer, cfg.data)


@torch.no_grad()
def validation_loss(ctx: PolicyContext, examples: list[Example]) -> float:
    """Token-mean cross-entropy of the student on the ground-truth responses."""
    total, tokens = 0.0, 0
    size = ctx.cfg.train.batch_size
    with rollout.eval_mode(ctx.student):
        for start in range(0, len(examples), size):
            batch = collate(examples[start : start + size], ctx.tokenizer.pad_token_id).to(ctx.device)
            logits = target_logits(ctx.student, batch, ctx.vocab_size)
            out = sft_loss_sum(logits, batch.labels[batch.labels != IGNORE])
            total, tokens = total + float(out.loss_sum), tokens + out.n_tokens
    return total / max(1, tokens)


class AdaptiveOffPolicy(DataPolicy):
    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx.tokenizer.pad_token_id)
        m = ctx.cfg.method
        self.ctx = ctx
        self.val_examples = validation_examples(ctx)
        self.schedule = AdaptiveSchedule(m.replay_init_prob, m.replay_loss_eps, m.replay_capacity)
        self.buffer: deque[Example] = deque(maxlen=m.replay_capacity)
        self.rng = random.Random(ctx.seed)
        self.total_steps = 1
        self.step_sources: list[str] = []
        self.counts = {STUDENT: 0, REPLAY: 0, GROUND_TRUTH: 0}
        self.val_losses: list[tuple[int, float]] = []
        self.seconds = 0.0

    def _validate(self, step: int) -> float:
        loss = validation_loss(self.ctx, self.val_examples)
        self.schedule.observe(loss)
        self.val_losses.append((step, loss))
        return loss

    def prepare(self, examples: list[Example], total_steps: int) -> list[Example]:
        self.total_steps = total_steps
        self._validate(0)
        return examples

    def micro_batch(self, examples: list[Example], step: int) -> Batch:
        source = self.schedule.source(self.rng.random(), step, self.total_steps, len(self.buffer))
        self.step_sources.append(source)
        if source == STUDENT:
            t0 = time.perf_counter()
            examples = rollout.student_rollout(self.ctx, examples, self.pad_id)
            self.buffer.extend(examples)
            self.seconds += time.perf_counter() - t0
        elif source == REPLAY:
            examples = self.rng.sample(list(self.buffer), k=len(examples))
        return collate(examples, self.pad_id)

    def end_step(self, step: int) -> dict[str, Any]:
        sources, self.step_sources = self.step_sources, []
        for source in sources:
            self.counts[source] += 1
        row: dict[str, Any] = {
            "replay_prob": self.schedule.prob,
            "off_policy": sum(s != GROUND_TRUTH for s in sources) / max(1, len(sources)),
        }
        if step % self.ctx.cfg.method.replay_eval_every == 0 and step < self.total_steps:
            row["val_loss"] = self._validate(step)
        return row

    def summary(self) -> dict[str, Any]:
        return {
            "micro_batches": dict(self.counts),
            "final_replay_prob": self.schedule.prob,
            "val_losses": self.val_losses,
            "val_rows": len(self.val_examples),
            "rollout_seconds": self.seconds,
        }


register_method(
    Method(
        name="distillm",
        description="skew reverse KL with an adaptive mix of student-generated (replayed) responses",
        paper="Ko et al. 2024 (DistiLLM), ICML",
        config=DistiLLMConfig,
        data_policy="adaptive_off_policy",
        policy=AdaptiveOffPolicy,
    )
)
