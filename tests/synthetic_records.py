"""Write run records in the current schema (record.json + train_log.jsonl + samples.jsonl) with values
chosen by the test, so the leaderboard's aggregates can be checked against hand-computed numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from speckd_bench.caches import atomic_write_json, atomic_write_jsonl
from speckd_bench.config.run_config import RunConfig, apply_overrides
from speckd_bench.evaluation.degeneracy import degeneracy as degeneracy_of
from speckd_bench.methods.discovery import method_config
from speckd_bench.records.run_record import SCHEMA_VERSION
from speckd_bench.records.train_log import summarize_log

HEALTHY = {"empty": 0.0, "distinct_1": 0.6, "distinct_2": 0.9, "repetition": 0.05}


def _init(key: str, steps: int, final_loss: float) -> dict[str, Any]:
    """record["init"]: the shared SFT warm start."""
    plan = {"steps": steps, "rows": 200, "epochs": 1, "lr": 1e-4, "batch_size": 4, "grad_accum": 1, "seed": 0}
    training = {"steps": steps, "final_loss": final_loss}
    return {"enabled": True, "key": key, "plan": plan, "training": training, "reused": False}


def _reference(
    teacher: dict[str, float] | None, floors: dict[str, tuple[str, dict[str, float]]], n_eval: int
) -> dict[str, Any]:
    """metrics[set]["reference"]: the teacher's summary and the floors (output text, task metrics)."""
    reference: dict[str, Any] = {"floors": {}}
    if teacher is not None:
        reference["teacher"] = {"metrics": teacher, "degeneracy": HEALTHY, "key": "teacher-cache-key"}
    for name, (output, metrics) in floors.items():
        text = {"echo_instruction": "<instruction>", "echo_input": "<input>"}.get(name, output)
        floor = {"output": text, "metrics": metrics, "degeneracy": degeneracy_of([output] * n_eval)}
        if name == "constant":
            floor |= {"chosen_from": [output, "other"], "chosen_on": "train references"}
        reference["floors"][name] = floor
    return reference


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
    init_key: str | None = None,
    init_steps: int = 40,
    init_final_loss: float = 1.5,
    teacher: dict[str, float] | None = None,
    floors: dict[str, tuple[str, dict[str, float]]] | None = None,
    degeneracy: dict[str, float] | None = None,
    fidelity: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """One complete run; `scores` maps each eval seed to the per-example rougeL of the eval prompts.

    The newer record fields appear only when asked for: `init_key` (record["init"], the SFT warm
    start), `teacher` (reference teacher metrics), `floors` (name -> (output text, task metrics)),
    `degeneracy` (of the outputs after training) and `fidelity` (metric -> per-prompt score, the same
    for every eval seed; the run-level value is their mean)."""
    fidelity = fidelity or {}
    cfg = RunConfig(method=method_config(method)[0])
    apply_overrides(cfg, {"seed": seed, "task": task, **(settings or {})}, "test")
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
            "scores": {"rougeL": value, **{m: v[i] for m, v in fidelity.items()}},
        }
        for eval_seed, values in scores.items()
        for i, value in enumerate(values)
    ]
    per_seed = {str(s): {"rougeL": statistics.fmean(v)} for s, v in scores.items()}
    seed_means = [m["rougeL"] for m in per_seed.values()]
    run_id = f"{method}-{task}-s{seed}-{len(list((results_dir / 'runs').glob('*')))}"
    run_dir = results_dir / "runs" / run_id
    before = {"raw": {"metrics": {"rougeL": 1.0}}, "init": {"metrics": {"rougeL": init_score}}}
    after: dict[str, Any] = {
        "metrics": {
            "rougeL": statistics.fmean(seed_means),
            **{m: statistics.fmean(v) for m, v in fidelity.items()},
        },
        "std_over_eval_seeds": {"rougeL": statistics.pstdev(seed_means)},
        "per_seed": per_seed,
    }
    if degeneracy is not None:
        after["degeneracy"] = degeneracy
    per_set: dict[str, Any] = {"before": before, "after": after}
    if teacher is not None or floors:
        per_set["reference"] = _reference(teacher, floors or {}, len(next(iter(scores.values()))))
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
        "metrics": {task: per_set},
        **({"init": _init(init_key, init_steps, init_final_loss)} if init_key else {}),
        "training": summarize_log(log, cfg.train.spike_factor),
        "paths": {"train_log": "train_log.jsonl", "samples": "samples.jsonl", "checkpoint": "checkpoint"},
    }
    atomic_write_jsonl(run_dir / "train_log.jsonl", log)
    atomic_write_jsonl(run_dir / "samples.jsonl", samples)
    atomic_write_json(run_dir / "record.json", record)
    return json.loads((run_dir / "record.json").read_text())
