"""Which settings change a result: the one place that answers "does this config give the same results?".

The rule: a config's flattened settings less NON_RESULT_KEYS (run_config.py) are its results' settings.
Everything that compares configs (resuming a run, skipping a done sweep point, grouping leaderboard rows,
the keys of cached scores) asks the functions here.
"""

from __future__ import annotations

from typing import Any

from speckd_bench.config.run_config import NON_RESULT_KEYS, RunConfig, flatten

NOT_A_SCORE_SETTING = ("eval.eval_before", "eval.suite")
"""Eval settings that choose which scores a run makes (which stages, which sets), not what a score is."""


def result_config(config: dict[str, Any], with_seed: bool = True) -> dict[str, Any]:
    """A config's flattened settings that can change its results (not paths, checkpointing, ...); without
    the seed when `with_seed` is False: what the runs averaged over training seeds share."""
    skip = {*NON_RESULT_KEYS, *(() if with_seed else ("seed",))}
    return {k: v for k, v in flatten(config).items() if k not in skip}


def result_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key old -> new' for every result-changing setting in which two configs differ."""
    a, b = result_config(old), result_config(new)
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def eval_identity(cfg: RunConfig, models: dict[str, Any]) -> dict[str, Any]:
    """The settings that change a score (not the decoding backend, nor which stages run); the teacher's
    weights and dtype, which the teacher's own scores and the fidelity metrics depend on."""
    settings = result_config(cfg.to_dict())
    return {
        "eval": {
            key.removeprefix("eval."): value
            for key, value in settings.items()
            if key.startswith("eval.") and key not in NOT_A_SCORE_SETTING
        },
        "teacher": [cfg.model.teacher, models["teacher_fingerprint"], cfg.model.teacher_dtype],
    }
