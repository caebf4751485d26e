"""Which settings change a result: the one place that answers "does this config give the same results?"."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from speckd_bench.config.run_config import NON_RESULT_KEYS, RunConfig, flatten


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """A record's config without the keys that never change its results (paths, checkpointing, ...)."""
    return {k: v for k, v in flatten(config).items() if k not in NON_RESULT_KEYS}


def eval_identity(cfg: RunConfig, models: dict[str, Any]) -> dict[str, Any]:
    """The settings that change a score (not the decoding backend, nor which stages run); the teacher's
    weights and dtype, which the teacher's own scores and the fidelity metrics depend on."""
    skip = {*NON_RESULT_KEYS, "eval.eval_before", "eval.suite"}
    return {
        "eval": {k: v for k, v in asdict(cfg.eval).items() if f"eval.{k}" not in skip},
        "teacher": [cfg.model.teacher, models["teacher_fingerprint"], cfg.model.teacher_dtype],
    }
