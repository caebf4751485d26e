"""Generalized KD (Agarwal et al. 2024): with probability lambda a micro-batch's responses are sampled
from the current student (on-policy), else the ground truth is used; generalised JSD(beta=0.5) by default.
"""

from __future__ import annotations

import random
import time
from typing import Any

from speckd_bench import rollout
from speckd_bench.data import Batch, Example, collate
from speckd_bench.methods import DataPolicy, Method, PolicyContext, register_method


class OnPolicyMix(DataPolicy):
    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx.tokenizer.pad_token_id)
        self.ctx = ctx
        self.rng = random.Random(ctx.seed)
        self.step_flags: list[bool] = []
        self.on_policy_batches = self.batches = 0
        self.seconds = 0.0

    def micro_batch(self, examples: list[Example], step: int) -> Batch:
        on_policy = self.rng.random() < self.ctx.cfg.method.lmbda
        self.step_flags.append(on_policy)
        if on_policy:
            t0 = time.perf_counter()
            examples = rollout.student_rollout(self.ctx, examples, self.pad_id)
            self.seconds += time.perf_counter() - t0
        return collate(examples, self.pad_id)

    def end_step(self, step: int) -> dict[str, Any]:
        flags, self.step_flags = self.step_flags, []
        self.batches += len(flags)
        self.on_policy_batches += sum(flags)
        return {"on_policy": sum(flags) / max(1, len(flags))}

    def summary(self) -> dict[str, Any]:
        return {
            "on_policy_batches": self.on_policy_batches,
            "micro_batches": self.batches,
            "rollout_seconds": self.seconds,
        }


register_method(
    Method(
        name="gkd",
        description="generalised JSD on a mix of student-sampled (prob. lambda) and ground-truth responses",
        paper="Agarwal et al. 2024 (GKD, on-policy distillation), ICLR",
        defaults={"divergence": "jsd", "beta": 0.5, "lmbda": 0.5, "gate": "none"},
        data_policy="on_policy_mix",
        policy=OnPolicyMix,
    )
)
