"""Training: a Trainer owns one stage's optimiser (AdamW), schedule, gate generator, data policy, teacher
source and checkpoints; `step()` is the body of the loop and `fit()` the loop. Gradient accumulation
normalises the loss by the target tokens (or accepted tokens) of the whole optimiser step; every step
writes one JSON line to the training log.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.api.methods import DataPolicy, Method
from speckd_bench.config.run_config import RunConfig, TrainConfig
from speckd_bench.data.examples import Example, batch_order
from speckd_bench.distributed import Dist, process_context
from speckd_bench.engine.run_state import Checkpoints, TrainProgress, deferred_interrupt
from speckd_bench.loss.chunked_head import chunk_rows
from speckd_bench.loss.objective import MicroBatch, TeacherSource, micro_batch_loss
from speckd_bench.progress import progress_bar


@dataclass(frozen=True)
class Stage:
    """What one training stage runs: a method with its settings, the optimiser settings, learning rate,
    epochs and seed (the warm start and the KD stage are two stages of a run)."""

    method: Method
    mcfg: MethodConfig
    train: TrainConfig
    lr: float
    epochs: int
    seed: int
    label: str

    @classmethod
    def kd(cls, cfg: RunConfig, method: Method) -> Stage:
        """The run's own stage: its method, settings and seed."""
        t = cfg.train
        return cls(method, cfg.method, t, t.lr, t.epochs, cfg.seed, f"train {method.name}")

    @property
    def gated(self) -> bool:
        return isinstance(self.mcfg, KDConfig) and self.mcfg.gate != "none"


@dataclass
class TrainResult:
    steps: int
    target_tokens: int
    seq_tokens: int
    seconds: float
    diverged_at: int | None

    @property
    def tokens_per_s(self) -> float:
        return self.seq_tokens / self.seconds if self.seconds else 0.0


def plan_steps(n_examples: int, train: TrainConfig, epochs: int, world: int = 1) -> int:
    """Optimiser steps of a run whose every micro-batch is `world` processes x train.batch_size rows."""
    per_epoch = math.ceil(n_examples / (train.batch_size * world))
    return train.max_steps or math.ceil(per_epoch * epochs / train.grad_accum)


def lr_factor(scheduler: str, step: int, warmup: int, total: int) -> float:
    """The base lr's multiplier at the update after `step` earlier ones: (step + 1) / (warmup + 1) over the
    first `warmup` updates (so none runs at lr 0), then 1 decaying by `scheduler` (cosine, linear or
    constant) over the other total - warmup updates, still above 0 at the last."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if scheduler == "linear":
        return max(0.0, 1.0 - progress)
    if scheduler == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return 1.0


def warmup_steps(train: TrainConfig, total: int) -> int:
    """Updates of the linear warm-up: train.warmup_ratio of the stage's `total` updates."""
    return int(train.warmup_ratio * total)


def lr_schedule(train: TrainConfig, total: int) -> list[float]:
    """The lr multiplier of each of a stage's `total` updates, as the Trainer applies them."""
    warmup = warmup_steps(train, total)
    return [lr_factor(train.scheduler, step, warmup, total) for step in range(total)]


def run_seeds(seed: int) -> dict[str, int]:
    """Every random stream of a run, derived from its seed (all recorded)."""
    return {"train": seed, "data_order": seed, "gate": seed + 1, "policy": seed + 2}


def _batches(examples: list[Example], batch_size: int, seed: int, skip: int = 0) -> Iterator[list[Example]]:
    """The seeded stream of example batches over epochs, after its first `skip` batches (those a resumed
    run used)."""
    epoch = 0
    while True:
        for idx in batch_order(examples, batch_size, seed, epoch):
            if skip:
                skip -= 1
                continue
            yield [examples[i] for i in idx]
        epoch += 1


@dataclass
class StepStats:
    loss: float
    """Loss of the optimiser step: summed (weighted) loss over its micro-batches / the step's denominator."""
    n_tokens: int
    n_accepted: int
    divergence_sum: float
    seq_tokens: int


def accumulate(
    student: Any,
    teacher: TeacherSource | None,
    micro: list[MicroBatch | None],
    mcfg: MethodConfig,
    train_cfg: TrainConfig,
    dist: Dist,
    vocab_size: int,
    generator: torch.Generator | None,
) -> StepStats:
    """Backward over this process's micro-batches of one optimiser step (None: its shard was empty),
    sum the gradients and counts over processes, then divide the gradients by the step's global
    denominator (target tokens, or accepted tokens with normalize=accepted, of every process and
    micro-batch): the gradient equals that of one big batch whatever the split. Stats are global.
    `teacher` None: cross-entropy.
    """
    loss_sum, n_tok, n_acc, div_sum, seq = 0.0, 0, 0, 0.0, 0
    for mb in micro:
        if mb is None:
            continue
        out = micro_batch_loss(student, teacher, mb, mcfg, vocab_size, train_cfg, generator)
        out.loss_sum.backward()
        loss_sum += float(out.loss_sum.detach())
        n_tok, n_acc, div_sum = n_tok + out.n_tokens, n_acc + out.n_accepted, div_sum + out.divergence_sum
        seq += int(mb.batch.attention_mask.sum())
    loss_sum, n_tok, n_acc, div_sum, seq = dist.sum([loss_sum, n_tok, n_acc, div_sum, seq])
    n_tok, n_acc, seq = int(n_tok), int(n_acc), int(seq)
    by_accepted = teacher is not None and isinstance(mcfg, KDConfig) and mcfg.normalize == "accepted"
    denom = max(1, n_acc if by_accepted else n_tok)
    params = [p for p in student.parameters() if p.requires_grad]
    dist.sum_grads(params)
    for p in params:
        if p.grad is not None:
            p.grad.div_(denom)
    return StepStats(loss_sum / denom, n_tok, n_acc, div_sum, seq)


class Trainer:
    """Trains `student` in place through one stage.

    `policy` makes each micro-batch from its examples (default: the ground-truth responses); `teacher`
    gives the teacher's logits (None for cross-entropy methods). Data parallel when launched with several
    processes: every micro-batch of the seeded order holds processes x batch_size rows and each process
    trains on its shard of it, so N processes x batch B follow the same trajectory as 1 process x batch
    N*B. Only the main process writes the log and the checkpoints; random streams (gate draws, rollouts)
    are offset by the process rank. With `checkpoints`, training resumes from the newest one and saves
    one when due, at the end, and on Ctrl-C (which then stops the loop after the current step with
    KeyboardInterrupt). `on_step` gets every log row (and its step) once it is written (the trackers).
    """

    def __init__(
        self,
        stage: Stage,
        student: Any,
        teacher: TeacherSource | None,
        examples: list[Example],
        *,
        vocab_size: int,
        pad_id: int,
        policy: DataPolicy | None = None,
        checkpoints: Checkpoints | None = None,
        on_step: Callable[[dict[str, Any], int], None] | None = None,
    ) -> None:
        self.device = next(student.parameters()).device
        # the stage's own settings with the fused loss's chunk rows fixed once, from the free memory when the
        # stage starts (per micro-batch they would cost a memory query each and could change mid-run as the
        # allocator caches memory)
        rows = chunk_rows(vocab_size, stage.train.fused_chunk_rows, self.device)
        self.stage = stage = replace(stage, train=replace(stage.train, fused_chunk_rows=rows))
        self.student, self.teacher, self.examples = student, teacher, examples
        self.vocab_size, self.checkpoints, self.on_step = vocab_size, checkpoints, on_step
        self.dist = process_context()
        seeds = run_seeds(stage.seed)
        torch.manual_seed(seeds["train"] + self.dist.rank)
        self.gate_gen = torch.Generator(device=self.device).manual_seed(seeds["gate"] + self.dist.rank)
        self.policy = policy or DataPolicy(pad_id)
        student.train()
        self.params = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=stage.lr, weight_decay=stage.train.weight_decay)
        self.total = plan_steps(len(examples), stage.train, stage.epochs, self.dist.world)
        kind, total, warmup = stage.train.scheduler, self.total, warmup_steps(stage.train, self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(kind, step, warmup, total)
        )
        self.progress = TrainProgress()

    def _restore(self, log_path: Path) -> Iterator[list[Example]]:
        """Load the newest checkpoint (if any), then the data stream from where it stopped."""
        if self.checkpoints is not None:
            self.progress = self.checkpoints.restore(
                self.student, self.optimizer, self.scheduler, self.gate_gen, log_path
            )
        skip = self.progress.step * self.stage.train.grad_accum
        global_batch = self.stage.train.batch_size * self.dist.world
        examples = self.policy.prepare(self.examples, self.total)
        return _batches(examples, global_batch, run_seeds(self.stage.seed)["data_order"], skip)

    def step(self, step: int, batches: Iterator[list[Example]]) -> tuple[dict[str, Any], int] | None:
        """One optimiser step (1-based) over the next grad_accum global batches: its log row and the
        sequence tokens it trained on, or None when the loss or gradient norm is not finite (the weights
        are then left unchanged)."""
        t0 = time.perf_counter()
        stage, dist = self.stage, self.dist
        self.optimizer.zero_grad(set_to_none=True)
        shards = [dist.shard(next(batches)) for _ in range(stage.train.grad_accum)]
        micro = [
            MicroBatch(self.policy.micro_batch(rows, step).to(self.device), rows) if rows else None
            for rows in shards
        ]
        stats = accumulate(
            self.student,
            self.teacher,
            micro,
            stage.mcfg,
            stage.train,
            dist,
            self.vocab_size,
            self.gate_gen,
        )
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, stage.train.max_grad_norm))
        if not (math.isfinite(stats.loss) and math.isfinite(grad_norm)):
            return None
        lr = self.scheduler.get_last_lr()[0]  # this update's (scheduler.step() moves to the next one's)
        self.optimizer.step()
        self.scheduler.step()
        dt = time.perf_counter() - t0
        n_tok = max(1, stats.n_tokens)
        row = {
            "step": step,
            "loss": stats.loss,
            "divergence": stats.divergence_sum / n_tok if self.teacher is not None else None,
            "tar": stats.n_accepted / n_tok if stage.gated and self.teacher is not None else None,
            "grad_norm": grad_norm,
            "lr": lr,
            "target_tokens": stats.n_tokens,
            "tokens_per_s": stats.seq_tokens / dt,
            "seconds": dt,
            **self.policy.end_step(step),
        }
        return row, stats.seq_tokens

    def _save(self, log: Any) -> None:
        if self.checkpoints is not None and self.dist.is_main:
            self.checkpoints.save(
                self.progress, self.student, self.optimizer, self.scheduler, self.gate_gen, log
            )

    def fit(self, log_path: Path, quiet: bool) -> TrainResult:
        """Run the remaining steps, one log line each; stops at the first non-finite step."""
        dist = self.dist
        if dist.is_main:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        batches = self._restore(log_path)
        progress = self.progress
        diverged_at = None
        start = time.perf_counter() - progress.seconds
        with (
            open(log_path if dist.is_main else os.devnull, "a" if progress.step else "w") as log,
            progress_bar(self.stage.label, self.total, quiet or not dist.is_main, log_steps=True) as bar,
            deferred_interrupt() as interrupt,
        ):
            bar.start_at(progress.step)  # a resumed run's earlier steps are counted, not timed
            for step in range(progress.step + 1, self.total + 1):
                done = self.step(step, batches)
                if done is None:
                    diverged_at = step
                    log.write(json.dumps({"step": step, "loss": None, "diverged": True}) + "\n")
                    break
                row, seq_tokens = done
                log.write(json.dumps(row) + "\n")
                log.flush()
                elapsed = time.perf_counter() - start
                progress.advance(step, row["target_tokens"], seq_tokens, log.tell(), elapsed)
                bar.advance(
                    loss=row["loss"],
                    divergence=row["divergence"],
                    tar=row["tar"],
                    tokens_per_s=row["tokens_per_s"],
                )
                if self.on_step is not None:
                    self.on_step(row, step)
                interrupt.requested = dist.max(float(interrupt.requested)) > 0  # every process stops together
                if self.checkpoints is not None and (self.checkpoints.due(step) or interrupt.requested):
                    self._save(log)
                if interrupt.requested:
                    raise KeyboardInterrupt(f"stopped after step {step}")
            self._save(log)  # the end, or the last good step before a divergence
        if interrupt.requested:  # Ctrl-C during that last save
            raise KeyboardInterrupt(f"stopped after step {progress.step}")
        self.student.eval()
        seconds = time.perf_counter() - start
        return TrainResult(progress.step, progress.target_tokens, progress.seq_tokens, seconds, diverged_at)
