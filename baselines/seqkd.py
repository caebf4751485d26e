"""Sequence-level KD (Kim & Rush 2016): cross-entropy on responses the teacher generated for the training
prompts. The responses are generated once and cached on disk, keyed by everything they depend on (teacher,
task, the prompts' tokens, decoding settings), so later runs and other seeds reuse them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speckd_bench.api.method_config import MethodConfig, TeacherSamplingConfig
from speckd_bench.api.methods import DataPolicy, Method, PolicyContext, register_method
from speckd_bench.caches import atomic_write_json, building, cache_dir, digest, read_json
from speckd_bench.data.examples import Example
from speckd_bench.methods import rollout
from speckd_bench.models.loading import fingerprint

GENERATION_SEED = 0
"""Fixed, so the cached responses do not depend on the run's seed."""


@dataclass
class SeqKDConfig(MethodConfig, TeacherSamplingConfig):
    """Cross-entropy on teacher samples: the teacher's sampling settings and response length."""


class TeacherResponses(DataPolicy):
    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx.tokenizer.pad_token_id)
        self.ctx = ctx
        self.info: dict[str, Any] = {}

    def identity(self, examples: list[Example]) -> dict[str, Any]:
        cfg = self.ctx.cfg
        prompts = digest([e.prompt_ids for e in examples], length=64)
        return {
            "teacher": cfg.model.teacher,
            "teacher_weights": fingerprint(self.ctx.teacher),
            "teacher_dtype": cfg.model.teacher_dtype,
            "task": cfg.task,
            "rows": len(examples),
            "prompts_sha256": prompts,
            "temperature": cfg.method.teacher_temperature,
            "top_p": cfg.method.teacher_top_p,
            "max_new_tokens": rollout.max_new_tokens(cfg),
            "batch_size": cfg.eval.batch_size,
            "seed": GENERATION_SEED,
        }

    def cache_path(self, identity: dict[str, Any]) -> Path:
        key = digest(identity)
        return cache_dir() / "seqkd" / f"{identity['task']}-{key}.json"

    def generate(self, examples: list[Example]) -> list[list[int]]:
        ctx, cfg = self.ctx, self.ctx.cfg
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids))
        responses: list[list[int]] = [[] for _ in examples]
        size = cfg.eval.batch_size
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(GENERATION_SEED)
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                out = rollout.sample_responses(
                    ctx.teacher,
                    [examples[i].prompt_ids for i in idx],
                    rollout.teacher_sampling(cfg),
                    rollout.max_new_tokens(cfg),
                    self.pad_id,
                    ctx.tokenizer.eos_token_id,
                )
                for i, response in zip(idx, out, strict=True):
                    responses[i] = response
        return responses

    def prepare(self, examples: list[Example], total_steps: int) -> list[Example]:
        identity = self.identity(examples)
        path = self.cache_path(identity)
        t0 = time.perf_counter()
        with building(path, lambda p: _entry_problem(p, len(examples))) as reused:
            if reused:
                responses = read_json(path)["responses"]
            else:
                responses = self.generate(examples)
                atomic_write_json(path, {"identity": identity, "responses": responses})
        self.info = {
            "cache": str(path),
            "reused": reused,
            "seconds": time.perf_counter() - t0,
            "generation_seed": GENERATION_SEED,
            "mean_response_tokens": sum(map(len, responses)) / max(1, len(responses)),
        }
        return rollout.as_examples(examples, responses)

    def summary(self) -> dict[str, Any]:
        return self.info


def _entry_problem(path: Path, rows: int) -> str | None:
    """Why cached responses cannot be used (garbled, cut short, another number of rows), or None."""
    try:
        entry = read_json(path)
    except ValueError as exc:
        return str(exc)
    responses = entry.get("responses") if isinstance(entry, dict) else None
    return None if isinstance(responses, list) and len(responses) == rows else "not this cache entry"


register_method(
    Method(
        name="seqkd",
        description="cross-entropy on teacher-sampled responses to the training prompts (cached, reused)",
        paper="Kim & Rush 2016 (sequence-level KD)",
        config=SeqKDConfig,
        data_policy="teacher_generated",
        policy=TeacherResponses,
    )
)
