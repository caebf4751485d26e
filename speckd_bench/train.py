"""The training loop: AdamW + schedule, gradient accumulation with the loss normalised by the target
tokens (or accepted tokens) of the whole optimiser step, bf16 autocast on CUDA, a JSONL log per step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from speckd_bench import kd_loss
from speckd_bench.checkpoint import Checkpoints, TrainProgress, deferred_interrupt
from speckd_bench.config import MethodConfig, TrainConfig
from speckd_bench.data import IGNORE, Batch, Example, batch_order
from speckd_bench.distributed import Dist, process_context
from speckd_bench.methods import DataPolicy, Method
from speckd_bench.models import fusable, output_head, target_hidden, target_logits
from speckd_bench.objective import (
    LossSum,
    OutputHead,
    TeacherLogits,
    fused_kd_loss_sum,
    fused_sft_loss_sum,
    kd_loss_sum,
    sft_loss_sum,
)
from speckd_bench.progress import progress_bar

SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


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


def run_seeds(seed: int) -> dict[str, int]:
    """Every random stream of a run, derived from its seed (all recorded)."""
    return {"train": seed, "data_order": seed, "gate": seed + 1, "policy": seed + 2}


def _batches(examples: list[Example], batch_size: int, seed: int, skip: int = 0):
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


def _student_head(student: Any, batch: Batch, vocab: int, chunk_rows: int) -> OutputHead:
    weight, bias = output_head(student, vocab)
    return OutputHead(target_hidden(student, batch), weight, bias, kd_loss.chunk_rows(vocab, chunk_rows))


@torch.no_grad()
def _teacher_logits(teacher: Any, batch: Batch, vocab: int) -> TeacherLogits:
    """The teacher's logits at slices of the target rows: from the batch's cached top-k when it has one,
    else from one forward pass whose output layer runs per slice (never all rows at once)."""
    if batch.teacher_topk is not None:
        return lambda part, student: batch.teacher_topk.logprobs(part, vocab, student)
    if not fusable(teacher):
        logits = target_logits(teacher, batch, vocab)
        return lambda part, _: logits[part]
    hidden = target_hidden(teacher, batch)
    weight, bias = output_head(teacher, vocab)
    return lambda part, _: torch.nn.functional.linear(hidden[part], weight, bias).float()


def _micro_loss(
    student,
    teacher,
    batch: Batch,
    method: Method,
    mcfg: MethodConfig,
    train_cfg: TrainConfig,
    vocab: int,
    gen,
) -> LossSum:
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if batch.input_ids.is_cuda else contextlib.nullcontext()
    )
    fused = train_cfg.fused_loss and fusable(student)
    with autocast:
        if not method.uses_teacher:
            targets = batch.labels[batch.labels != IGNORE]
            if fused:
                return fused_sft_loss_sum(
                    _student_head(student, batch, vocab, train_cfg.fused_chunk_rows), targets
                )
            return sft_loss_sum(target_logits(student, batch, vocab), targets)
        teacher_logits = _teacher_logits(teacher, batch, vocab)
        if fused:
            head = _student_head(student, batch, vocab, train_cfg.fused_chunk_rows)
            return fused_kd_loss_sum(head, teacher_logits, mcfg, gen)
        s_logits = target_logits(student, batch, vocab)
        return kd_loss_sum(s_logits, teacher_logits(slice(None), s_logits.detach()), mcfg, gen)


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
    teacher: Any,
    micro: list[Batch],
    method: Method,
    mcfg: MethodConfig,
    vocab_size: int,
    generator: torch.Generator | None,
    train_cfg: TrainConfig | None = None,
    dist: Dist | None = None,
) -> StepStats:
    """Backward over this process's micro-batches of one optimiser step (None: its shard was empty),
    sum the gradients and counts over processes, then divide the gradients by the step's global
    denominator (target tokens, or accepted tokens with normalize=accepted, of every process and
    micro-batch): the gradient equals that of one big batch whatever the split. Stats are global.
    """
    train_cfg = train_cfg or TrainConfig()
    dist = dist or process_context()
    loss_sum, n_tok, n_acc, div_sum, seq = 0.0, 0, 0, 0.0, 0
    for batch in micro:
        if batch is None:
            continue
        out = _micro_loss(student, teacher, batch, method, mcfg, train_cfg, vocab_size, generator)
        out.loss_sum.backward()
        loss_sum += float(out.loss_sum.detach())
        n_tok, n_acc, div_sum = n_tok + out.n_tokens, n_acc + out.n_accepted, div_sum + out.divergence_sum
        seq += int(batch.attention_mask.sum())
    loss_sum, n_tok, n_acc, div_sum, seq = dist.sum([loss_sum, n_tok, n_acc, div_sum, seq])
    n_tok, n_acc, seq = int(n_tok), int(n_acc), int(seq)
    denom = max(1, n_acc if method.uses_teacher and mcfg.normalize == "accepted" else n_tok)
    params = [p for p in student.parameters() if p.requires_grad]
    dist.sum_grads(params)
    for p in params:
        if p.grad is not None:
            p.grad.div_(denom)
    return StepStats(loss_sum / denom, n_tok, n_acc, div_sum, seq)


def train(
    student: Any,
    teacher: Any,
    method: Method,
    mcfg: MethodConfig,
    train_cfg: TrainConfig,
    examples: list[Example],
    *,
    lr: float,
    epochs: int,
    seed: int,
    vocab_size: int,
    pad_id: int,
    log_path: Path,
    label: str,
    quiet: bool,
    checkpoints: Checkpoints | None = None,
    policy: DataPolicy | None = None,
    on_step: Callable[[dict[str, Any], int], None] | None = None,  # tracking:
) -> TrainResult:
    """Train `student` in place; one JSON line per optimiser step goes to log_path. `policy` makes each
    micro-batch from its examples (default: the ground-truth responses).

    Data parallel when launched with several processes: every micro-batch of the seeded order holds
    processes x batch_size rows and each process trains on its shard of it, so N processes x batch B
    follow the same trajectory as 1 process x batch N*B. Only the main process writes the log and the
    checkpoints; random streams (gate draws, rollouts) are offset by the process rank.

    With `checkpoints`, training resumes from the newest one and saves one when due, at the end, and
    on Ctrl-C (which then stops the loop after its current step with KeyboardInterrupt). `on_step` gets
    every log row (and its step) once it is written.
    """
    device = next(student.parameters()).device
    dist = process_context()
    seeds = run_seeds(seed)
    torch.manual_seed(seeds["train"] + dist.rank)
    gate_gen = torch.Generator(device=device).manual_seed(seeds["gate"] + dist.rank)
    policy = policy or DataPolicy(pad_id)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=train_cfg.weight_decay)
    total = plan_steps(len(examples), train_cfg, epochs, dist.world)
    scheduler = get_scheduler(
        SCHEDULERS[train_cfg.scheduler],
        optimizer,
        num_warmup_steps=int(train_cfg.warmup_ratio * total),
        num_training_steps=total,
    )
    if dist.is_main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    done = TrainProgress()
    if checkpoints is not None:
        done = checkpoints.restore(student, optimizer, scheduler, gate_gen, log_path)
    skip = done.step * train_cfg.grad_accum
    global_batch = train_cfg.batch_size * dist.world
    batches = _batches(policy.prepare(examples, total), global_batch, seeds["data_order"], skip)
    diverged_at = None
    start = time.perf_counter() - done.seconds
    with (
        open(log_path if dist.is_main else os.devnull, "a" if done.step else "w") as log,
        progress_bar(label, total, quiet or not dist.is_main, log_steps=True) as bar,  # progress:
        deferred_interrupt() as interrupt,
    ):
        bar.start_at(done.step)  # progress: a resumed run's earlier steps are counted, not timed
        for step in range(done.step + 1, total + 1):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            shards = [dist.shard(next(batches)) for _ in range(train_cfg.grad_accum)]
            micro = [policy.micro_batch(rows, step).to(device) if rows else None for rows in shards]
            stats = accumulate(student, teacher, micro, method, mcfg, vocab_size, gate_gen, train_cfg, dist)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train_cfg.max_grad_norm))
            loss, n_tok, n_acc = stats.loss, stats.n_tokens, stats.n_accepted
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                diverged_at = step
                log.write(json.dumps({"step": step, "loss": None, "diverged": True}) + "\n")
                break
            optimizer.step()
            scheduler.step()
            dt = time.perf_counter() - t0
            row = {
                "step": step,
                "loss": loss,
                "divergence": stats.divergence_sum / max(1, n_tok) if method.uses_teacher else None,
                "tar": n_acc / max(1, n_tok) if mcfg.gate != "none" and method.uses_teacher else None,
                "grad_norm": grad_norm,
                "lr": scheduler.get_last_lr()[0],
                "target_tokens": n_tok,
                "tokens_per_s": stats.seq_tokens / dt,
                "seconds": dt,
                **policy.end_step(step),
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            done.advance(step, n_tok, stats.seq_tokens, log.tell(), time.perf_counter() - start)
            bar.advance(  # progress: the stats of the plain log line
                loss=loss, divergence=row["divergence"], tar=row["tar"], tokens_per_s=row["tokens_per_s"]
            )
            if on_step is not None:  # tracking: the row as written to the log
                on_step(row, step)
            interrupt.requested = dist.max(float(interrupt.requested)) > 0  # every process stops together
            if checkpoints is not None and dist.is_main and (checkpoints.due(step) or interrupt.requested):
                checkpoints.save(done, student, optimizer, scheduler, gate_gen, log)
            if interrupt.requested:
                raise KeyboardInterrupt(f"stopped after step {step}")
        if checkpoints is not None and dist.is_main:  # the end, or the last good step before a divergence
            checkpoints.save(done, student, optimizer, scheduler, gate_gen, log)
    if interrupt.requested:  # Ctrl-C during that last save
        raise KeyboardInterrupt(f"stopped after step {done.step}")
    student.eval()
    return TrainResult(
        done.step, done.target_tokens, done.seq_tokens, time.perf_counter() - start, diverged_at
    )
