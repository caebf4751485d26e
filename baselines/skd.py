"""Speculative KD (Xu et al., ICLR 2025): interleaved sampling. The student samples each response token
(temperature 0.5, top-p 0.5); a token outside the teacher's top-K (K=25) is replaced by a teacher sample
(temperature 0.2, top-p 0.5). The divergence then counts at every token of the mixed sequence. The
paper's learning rate is 1e-5 (set train.lr yourself; method defaults cover method.* only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from speckd_bench.api.method_config import StudentRolloutConfig, TeacherSamplingConfig
from speckd_bench.api.methods import DataPolicy, Method, PolicyContext, register_method
from speckd_bench.api.settings import setting
from speckd_bench.data.examples import Batch, Example, collate
from speckd_bench.methods import rollout


@dataclass
class SKDConfig(StudentRolloutConfig, TeacherSamplingConfig):
    skd_top_k: int = setting(
        25,
        "a student token outside the teacher's top skd_top_k is replaced by a teacher sample",
        check=lambda v: v >= 1,
        expected="skd_top_k >= 1",
    )
    gen_temperature: float = 0.5
    gen_top_p: float = 0.5
    teacher_temperature: float = 0.2
    teacher_top_p: float = 0.5


class InterleavedSampling(DataPolicy):
    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx.tokenizer.pad_token_id)
        self.ctx = ctx
        self.generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        self.proposals = self.replaced = 0
        self.step_counts = [0, 0]
        self.seconds = 0.0

    def micro_batch(self, examples: list[Example], step: int) -> Batch:
        ctx, cfg = self.ctx, self.ctx.cfg
        t0 = time.perf_counter()
        out = rollout.interleaved_responses(
            ctx.student,
            ctx.teacher,
            [e.prompt_ids for e in examples],
            vocab_size=ctx.vocab_size,
            top_k=cfg.method.skd_top_k,
            student_sampling=rollout.student_sampling(cfg),
            teacher_sampling=rollout.teacher_sampling(cfg),
            new_tokens=rollout.max_new_tokens(cfg),
            pad_id=self.pad_id,
            eos_id=ctx.tokenizer.eos_token_id,
            generator=self.generator,
        )
        self.seconds += time.perf_counter() - t0
        self.step_counts[0] += out.proposals
        self.step_counts[1] += out.replaced
        return collate(rollout.as_examples(examples, out.responses), self.pad_id)

    def end_step(self, step: int) -> dict[str, Any]:
        proposals, replaced = self.step_counts
        self.step_counts = [0, 0]
        self.proposals += proposals
        self.replaced += replaced
        return {"replaced": replaced / max(1, proposals)}

    def summary(self) -> dict[str, Any]:
        return {
            "proposals": self.proposals,
            "replaced": self.replaced,
            "replaced_fraction": self.replaced / max(1, self.proposals),
            "rollout_seconds": self.seconds,
        }


register_method(
    Method(
        name="skd",
        description="divergence on interleaved sequences: student samples, teacher replaces tokens outside "
        "its top-K",
        paper="Xu et al. 2025 (Speculative Knowledge Distillation), ICLR",
        config=SKDConfig,
        data_policy="interleaved",
        policy=InterleavedSampling,
    )
)
