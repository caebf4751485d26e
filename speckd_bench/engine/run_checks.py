"""Checks a run makes before anything heavy loads (names, settings that contradict each other, a writable
results folder, the facts of a multi-process launch) and, once the models are loaded, the lengths they can
take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speckd_bench.api.methods import METHODS, Method
from speckd_bench.api.metrics import METRICS
from speckd_bench.caches import probe_writable
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.tasks import TASKS
from speckd_bench.distributed import Dist
from speckd_bench.engine import teacher_cache
from speckd_bench.engine.summary import check_main_metric
from speckd_bench.errors import UserError
from speckd_bench.evaluation.lmeval import check_lm_eval
from speckd_bench.loss.divergences import DIVERGENCES
from speckd_bench.methods.discovery import check_method


def check_writable(results_dir: Path) -> None:
    """results_dir/runs can be created and written (a real write: permissions, a full or read-only disk)."""
    try:
        (results_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"results directory {results_dir} cannot be created ({exc.strerror}); pass --results-dir"
        ) from None
    probe_writable(results_dir / "runs")


def resolve_names(cfg: RunConfig) -> tuple[Any, Method]:
    """Fail on unknown names before anything heavy happens."""
    task = TASKS.get(cfg.task)
    method = METHODS.get(cfg.method.name)
    if method.uses_teacher:
        DIVERGENCES.get(cfg.method.divergence)
    for metric in task.metrics:
        METRICS.get(metric)
    check_method(method, cfg.method)
    teacher_cache.check(cfg, method)
    check_lm_eval(cfg)
    check_main_metric(cfg.eval.main_metric, task.name, task.metrics, cfg.eval.reference)
    if "train" not in task.splits:
        raise UserError(
            f"task {task.name} has no train split; train on another task and evaluate on this one"
        )
    return task, method


def check_distributed(cfg: RunConfig, method: Method, dist: Dist) -> None:
    """Settings a multi-process run cannot honour fail before any model is loaded."""
    if cfg.train.fsdp and dist.world > 1 and method.data_policy in ("teacher_generated", "interleaved"):
        raise UserError(
            f"method {method.name} generates with the teacher, which train.fsdp=true does not support "
            "(sharded decoding would need every process in step); drop train.fsdp or pick another method"
        )


def distributed_info(cfg: RunConfig, dist: Dist) -> dict[str, Any]:
    """The record's data-parallel facts: papers' results move with the global batch."""
    return {
        "num_processes": dist.world,
        "global_batch": dist.world * cfg.train.batch_size * cfg.train.grad_accum,
        "teacher_sharding": "fsdp2" if cfg.train.fsdp and dist.world > 1 else "replicated",
    }


def context_length(model: Any) -> int | None:
    """The positions a model's config allows (max_position_embeddings, or n_positions for GPT-2)."""
    config = model.config
    value = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(value) if value else None


def check_lengths(cfg: RunConfig, models: list[Any]) -> None:
    """Training sequences (data.max_length) and decoded ones (a prompt of data.max_prompt_length tokens
    plus eval.max_new_tokens) must fit every loaded model's context."""
    limits = [n for n in (context_length(m) for m in models if m is not None) if n is not None]
    if not limits:
        return
    limit, d = min(limits), cfg.data
    decoded = d.max_prompt_length + cfg.eval.max_new_tokens
    if d.max_length > limit or decoded > limit:
        raise UserError(
            f"the models take at most {limit} positions, but data.max_length={d.max_length} and "
            f"data.max_prompt_length + eval.max_new_tokens = {decoded}; lower them to fit {limit}"
        )
