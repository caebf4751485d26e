"""Write run records in the current schema (record.json + train_log.jsonl + samples.jsonl) with values
chosen by the test, so the leaderboard's aggregates can be checked against hand-computed numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from speckd_bench.config import RunConfig, apply_overrides
from speckd_bench.results import SCHEMA_VERSION, atomic_write_json, atomic_write_jsonl, summarize_log


def write_run(
    results_dir: Path,
    *,
    method: str,
    seed: int,
    scores: dict[int, list[float]],
    losses: list[float],
    grad_norms: list[float] | None = None,
    tars: list[float] | None = None,
    task: str = "dolly",
    settings: dict[str, Any] | None = None,
    created: str = "2026-01-15T12:00:00+00:00",
    wall_s: float = 120.0,
    tokens_per_s: float = 100.0,
    init_score: float = 5.0,
    diverged: bool = False,
) -> dict[str, Any]:
    """One complete run; `scores` maps each eval seed to the per-example rougeL of the eval prompts."""
    cfg = RunConfig()
    apply_overrides(cfg, {"method.name": method, "seed": seed, "task": task, **(settings or {})}, "test")
    cfg.eval.seeds = list(scores)
    grad_norms = grad_norms or [1.0] * len(losses)
    log = [
        {
            "step": i + 1,
            "loss": loss,
            "divergence": None,
            "tar": tars[i] if tars else None,
            "grad_norm": grad_norms[i],
            "lr": 1e-4,
            "target_tokens": 100,
            "tokens_per_s": tokens_per_s,
            "seconds": 1.0,
        }
        for i, loss in enumerate(losses)
    ]
    if diverged:
        log.append({"step": len(losses) + 1, "loss": None, "diverged": True})
    samples = [
        {
            "index": i,
            "eval_seed": eval_seed,
            "prompt": f"prompt {i}",
            "references": [f"reference {i}"],
            "output": f"output {i}",
            "scores": {"rougeL": value},
        }
        for eval_seed, values in scores.items()
        for i, value in enumerate(values)
    ]
    per_seed = {str(s): {"rougeL": statistics.fmean(v)} for s, v in scores.items()}
    seed_means = [m["rougeL"] for m in per_seed.values()]
    run_id = f"{method}-{task}-s{seed}-{len(list((results_dir / 'runs').glob('*')))}"
    run_dir = results_dir / "runs" / run_id
    before = {"raw": {"metrics": {"rougeL": 1.0}}, "init": {"metrics": {"rougeL": init_score}}}
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "complete",
        "created": created,
        "task": task,
        "method": method,
        "seed": seed,
        "main_metric": "rougeL",
        "config": cfg.to_dict(),
        "versions": {"speckd_bench": "0.1.0", "torch": "2.13.0", "transformers": "5"},
        "hardware": {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2, "device": "cpu"},
        "data": {"n_train": cfg.data.max_train_examples, "n_eval": len(next(iter(scores.values())))},
        "seeds": {"train": seed, "eval": list(scores)},
        "timings": {"wall_s": wall_s, "train_tokens_per_s": tokens_per_s},
        "metrics": {
            task: {
                "before": before,
                "after": {
                    "metrics": {"rougeL": statistics.fmean(seed_means)},
                    "std_over_eval_seeds": {"rougeL": statistics.pstdev(seed_means)},
                    "per_seed": per_seed,
                },
            }
        },
        "training": summarize_log(log, cfg.train.spike_factor),
        "paths": {"train_log": "train_log.jsonl", "samples": "samples.jsonl", "checkpoint": "checkpoint"},
    }
    atomic_write_jsonl(run_dir / "train_log.jsonl", log)
    atomic_write_jsonl(run_dir / "samples.jsonl", samples)
    atomic_write_json(run_dir / "record.json", record)
    return json.loads((run_dir / "record.json").read_text())
