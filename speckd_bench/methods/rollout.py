"""Generation for the data policies: plain rollouts of one model (seqkd's teacher, gkd's and distillm's
student) and SKD's interleaved sampling (the student proposes, the teacher replaces proposals outside
its top-K). Responses come back as token lists that end at the first EOS, EOS included; `as_examples`
pairs them with their prompts so `data.collate` masks the prompt and keeps the EOS as a target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import Example
from speckd_bench.evaluation.generate import cache_kwarg, cut_at_eos, left_pad, prompt_positions


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float


def student_sampling(cfg: RunConfig) -> Sampling:
    return Sampling(cfg.method.gen_temperature, cfg.method.gen_top_p)


def teacher_sampling(cfg: RunConfig) -> Sampling:
    return Sampling(cfg.method.teacher_temperature, cfg.method.teacher_top_p)


def max_new_tokens(cfg: RunConfig) -> int:
    """Response length of a rollout: what any prompt leaves of data.max_length, capped by the method."""
    room = cfg.data.max_length - cfg.data.max_prompt_length
    cap = cfg.method.gen_max_new_tokens
    return min(room, cap) if cap else room


def as_examples(sources: list[Example], responses: list[list[int]]) -> list[Example]:
    """The sources' prompts with new responses as targets."""
    return [
        Example(src.prompt_ids, response, src.prompt, src.references)
        for src, response in zip(sources, responses, strict=True)
    ]


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_responses(
    model: Any, prompts: list[list[int]], sampling: Sampling, new_tokens: int, pad_id: int, eos_id: int
) -> list[list[int]]:
    """One sampled response per prompt (transformers generate; draws from torch's global generator)."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    with eval_mode(model):
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            max_new_tokens=new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )
    return [cut_at_eos(row, eos_id) for row in out[:, ids.shape[1] :].tolist()]


def student_rollout(ctx: Any, examples: list[Example], pad_id: int) -> list[Example]:
    """The examples with their responses replaced by samples of the current student (on-policy data);
    ctx is the run's methods.PolicyContext."""
    responses = sample_responses(
        ctx.student,
        [e.prompt_ids for e in examples],
        student_sampling(ctx.cfg),
        max_new_tokens(ctx.cfg),
        pad_id,
        ctx.tokenizer.eos_token_id,
    )
    return as_examples(examples, responses)


def nucleus_sample(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row of [B, V] logits from the smallest top set holding top_p of the probability."""
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
    choice = torch.multinomial(sorted_probs * keep, 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def interleave_step(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    top_k: int,
    student: Sampling,
    teacher: Sampling,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SKD's choice for one position of B sequences: the student's sampled token when it is among the
    teacher's top_k, else a teacher sample. Returns (tokens [B], replaced [B] bool).
    """
    proposal = nucleus_sample(student_logits, student, generator)
    k = min(top_k, teacher_logits.shape[-1])
    inside = (teacher_logits.topk(k, dim=-1).indices == proposal[:, None]).any(-1)
    replacement = nucleus_sample(teacher_logits, teacher, generator)
    return torch.where(inside, proposal, replacement), ~inside


@dataclass
class Interleaved:
    responses: list[list[int]]
    proposals: int
    """Tokens the student proposed (positions before each sequence's EOS, EOS included)."""
    replaced: int
    """Of those, how many the teacher replaced."""


@torch.no_grad()
def interleaved_responses(
    student: Any,
    teacher: Any,
    prompts: list[list[int]],
    *,
    vocab_size: int,
    top_k: int,
    student_sampling: Sampling,
    teacher_sampling: Sampling,
    new_tokens: int,
    pad_id: int,
    eos_id: int,
    generator: torch.Generator | None,
) -> Interleaved:
    """SKD interleaved sampling, token by token with a KV cache in each model."""
    device = next(student.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = prompt_positions(mask)
    step_ids = ids
    caches = [{cache_kwarg(m): DynamicCache(config=m.config)} for m in (student, teacher)]
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    tokens, proposals, replaced = [], 0, 0
    with eval_mode(student):
        for _ in range(new_tokens):
            s_logits, t_logits = (
                model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=1,
                    **cache,
                ).logits[:, -1, :vocab_size]
                for model, cache in zip((student, teacher), caches, strict=True)
            )
            token, swapped = interleave_step(
                s_logits, t_logits, top_k, student_sampling, teacher_sampling, generator
            )
            active = ~finished
            proposals += int(active.sum())
            replaced += int((swapped & active).sum())
            token = token.masked_fill(finished, pad_id)
            tokens.append(token)
            finished |= token == eos_id
            if finished.all():
                break
            step_ids = token[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
    rows = torch.stack(tokens, dim=1).tolist()
    return Interleaved([cut_at_eos(row, eos_id) for row in rows], proposals, replaced)
