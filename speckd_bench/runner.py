"""One run = load data and models, warm-start (cached), train with the method, evaluate, record."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from speckd_bench import teacher_cache, tracking
from speckd_bench.checkpoint import CHECKPOINTS, Checkpoints, RunState, save_final
from speckd_bench.config import RunConfig
from speckd_bench.data import build_examples, load_split, mirror_dir
from speckd_bench.distributed import Dist, process_context, shard_teacher
from speckd_bench.divergences import DIVERGENCES
from speckd_bench.errors import RunInterrupted, UserError
from speckd_bench.evaluate import (
    EvalResult,
    EvalSet,
    TeacherView,
    build_eval_examples,
    eval_seeds,
    evaluate_sets,
    load_eval_sets,
    warn_skipped,
)
from speckd_bench.lmeval import check_lm_eval, run_lm_eval
from speckd_bench.methods import METHODS, Method, PolicyContext, check_method
from speckd_bench.metrics import METRICS
from speckd_bench.models import load_pair
from speckd_bench.progress import console, stage
from speckd_bench.reference import reference_rows
from speckd_bench.results import (
    SCHEMA_VERSION,
    atomic_write_json,
    atomic_write_jsonl,
    git_commit,
    hardware,
    new_run_id,
    read_log,
    summarize_log,
    versions,
)
from speckd_bench.tasks import TASKS
from speckd_bench.train import TrainResult, run_seeds, train
from speckd_bench.warmstart import WarmStart, init_rows, init_train_config


def check_writable(results_dir: Path) -> None:
    try:
        (results_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"results directory {results_dir} cannot be created ({exc.strerror}); pass --results-dir"
        ) from None
    if not os.access(results_dir / "runs", os.W_OK):
        raise UserError(f"results directory {results_dir / 'runs'} is not writable; pass --results-dir DIR")


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
    if "train" not in task.splits:
        raise UserError(
            f"task {task.name} has no train split; train on another task and evaluate on this one"
        )
    return task, method


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        console.print(msg)


def _warm_start(
    cfg: RunConfig, pair: Any, init_ex: list[Any], warm: WarmStart, run_dir: Path, quiet: bool
) -> dict[str, Any]:
    """Load the cached init checkpoint into the student, or build it (SFT) and cache it; its record part."""
    info: dict[str, Any] = {
        "enabled": True,
        "key": warm.key,
        "plan": warm.plan,
        "path": f"init/{warm.key}",
        "reused": warm.exists(),
    }
    if warm.exists():
        warm.load_into(pair.student)
    else:
        log = run_dir / "init_log.jsonl"
        res = train(
            pair.student,
            None,
            METHODS.get("sft"),
            cfg.method,
            init_train_config(cfg),
            init_ex,
            lr=cfg.train.init_lr,
            epochs=cfg.train.init_sft_epochs,
            seed=cfg.train.init_seed,
            vocab_size=pair.vocab_size,
            pad_id=pair.tokenizer.pad_token_id,
            log_path=log,
            label="init SFT",
            quiet=quiet,
        )
        if res.diverged_at is not None:  # never cache (and share) a broken init
            raise UserError(
                f"the SFT warm start diverged: non-finite loss at step {res.diverged_at}; lower "
                f"train.init_lr (now {cfg.train.init_lr}) or skip it with --set train.init_sft_epochs=0"
            )
        warm.save(
            pair.student, log, {"steps": res.steps, "seconds": res.seconds, "tokens_per_s": res.tokens_per_s}
        )
        log.unlink(missing_ok=True)  # only the main process wrote it
    info["training"] = summarize_log(read_log(warm.dir / "train_log.jsonl"), cfg.train.spike_factor)
    info["seconds_when_built"] = warm.meta()["seconds"]
    return info


def eval_sets_info(sets: list[EvalSet], skipped: dict[str, str]) -> dict[str, Any]:
    """Per eval set: where its rows came from and how many were scored, or why it was skipped."""
    info: dict[str, Any] = {es.name: {"source": es.rows.source, "n_eval": len(es.examples)} for es in sets}
    info.update({name: {"skipped": reason} for name, reason in skipped.items()})
    return info


def _before_training(
    cfg: RunConfig,
    pair: Any,
    init_ex: list[Any],
    state: RunState,
    checkpoints: Checkpoints,
    score: Callable[[str], dict[str, EvalResult]],
    sets: list[EvalSet],
    quiet: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Scores of the raw and init students on every eval set and the warm start, each done once per run:
    a resumed run takes them from its state and reloads the init weights only while training has no
    checkpoint. Scores are also cached with the warm start, so later methods of a comparison reuse them."""
    set_names = [es.name for es in sets]
    before: dict[str, dict[str, Any]] = state.get("before", {name: {} for name in set_names})
    init_info: dict[str, Any] = state.get("init", {"enabled": cfg.train.init_sft_epochs > 0})
    warm = WarmStart(cfg, init_ex, pair.info)
    keys = {es.name: warm.eval_key(es.name, es.examples) for es in sets}

    def done(stage: str) -> bool:
        return all(stage in before[name] for name in set_names)

    def scores(stage: str, label: str) -> None:
        cached = {n: warm.cached_eval(stage, keys[n]) for n in set_names} if cfg.train.init_sft_epochs else {}
        if not cached or any(v is None for v in cached.values()):
            cached = {n: r.summary() for n, r in score(label).items()}
        for name, summary in cached.items():
            before[name][stage] = summary
        state.put("before", before)

    def store(stage: str) -> None:
        for name in set_names:
            warm.store_eval(stage, keys[name], before[name][stage])

    if cfg.eval.eval_before and not done("raw"):
        scores("raw", "eval raw student")
    if not cfg.train.init_sft_epochs:
        return before, init_info
    if checkpoints.latest() is None:
        built = _warm_start(cfg, pair, init_ex, warm, state.dir, quiet)
        if "key" not in init_info:
            init_info = built
            state.put("init", init_info)
    if done("raw"):
        store("raw")
    if cfg.eval.eval_before and not done("init"):
        scores("init", "eval init student")
        store("init")
    if cfg.eval.eval_before:
        init_info["scores"] = {name: before[name]["init"]["metrics"] for name in set_names}
        state.put("init", init_info)
    return before, init_info


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


def _open_state(cfg: RunConfig, results_dir: Path, resume: Path | None, dist: Dist) -> RunState:
    """The run directory's state: created (or reopened) by the main process, read by the others."""
    state = None
    if dist.is_main and resume is None:
        state = RunState.create(results_dir / "runs" / new_run_id(cfg.task, cfg.method.name, cfg.seed), cfg)
        state.put("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    elif dist.is_main:
        state = RunState(resume)
    run_dir = dist.broadcast(state.dir if state else None)
    return state or RunState(run_dir, writable=False)


def run_once(
    cfg: RunConfig, quiet: bool = False, resume: Path | None = None, report_to: list[str] | None = None
) -> Path:
    """Train, evaluate and record one seed; returns the record's path.

    `resume`: the directory of an unfinished run with this config; its finished stages are reused and
    training continues from its newest checkpoint. Ctrl-C checkpoints, writes an 'interrupted' record
    and raises RunInterrupted. A non-finite loss stops training; the record of the last good
    weights is written, then UserError says so. `report_to`: experiment trackers (tracking.py).

    Launched with several processes, every process runs this function; training and evaluation are
    split between them, and only the main process writes the run directory and says anything.
    """
    wall0 = time.perf_counter()
    dist = process_context()
    quiet = quiet or not dist.is_main
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    task, method = resolve_names(cfg)
    check_distributed(cfg, method, dist)
    results_dir = Path(cfg.results_dir)
    check_writable(results_dir)
    if resume is not None:
        Checkpoints.of_run(resume, cfg).check()
    train_split = load_split(task, "train", cfg.data)
    train_rows = train_split.rows[: cfg.data.max_train_examples]
    sets, skipped = load_eval_sets(cfg.task, cfg.eval.suite, cfg.data)
    warn_skipped(skipped)
    device = dist.device
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)  # a CPU run repeats bit for bit, resumed or not
    t0 = time.perf_counter()
    sharded = cfg.train.fsdp and dist.world > 1
    reference = cfg.eval.reference and not sharded  # a sharded teacher cannot decode apart from the others
    with_teacher = method.uses_teacher or method.policy is not None or reference
    with stage("load models", quiet):  # progress:
        pair = load_pair(
            cfg.model, device, with_teacher, teacher_device=torch.device("cpu") if sharded else None
        )
    if sharded and pair.teacher is not None:
        pair.teacher = shard_teacher(pair.teacher, dist)
    load_s = time.perf_counter() - t0
    tok = pair.tokenizer
    train_ex = build_examples(task, train_rows, tok, cfg.data)
    n_init = init_rows(cfg, len(train_split.rows))
    init_ex = (
        train_ex
        if n_init == len(train_ex)
        else build_examples(task, train_split.rows[:n_init], tok, cfg.data)
    )
    build_eval_examples(sets, tok, cfg.data)
    eval_ex = sets[0].examples
    set_names = [es.name for es in sets]
    state = _open_state(cfg, results_dir, resume, dist)
    run_dir, run_id = state.dir, state.dir.name
    checkpoints = Checkpoints.of_run(run_dir, cfg)
    if resume is not None:
        state.put("resumed_from_step", [*state.get("resumed_from_step", []), checkpoints.latest_step()])
    n_eval = " + ".join(f"{len(es.examples)} {es.name}" for es in sets)
    _log(f"[bold]{run_id}[/]: {len(train_ex)} train / {n_eval} eval rows, device {device}", quiet)
    tracker = tracking.Tracking((report_to or []) if dist.is_main else [])  # tracking:
    tracker.start(run_id, cfg.to_dict(), run_dir)  # tracking:

    references: dict[str, dict[str, Any]] = {}
    view: TeacherView | None = None
    if reference:
        references, view = reference_rows(cfg, pair, sets, quiet)

    def score(label: str) -> dict[str, EvalResult]:
        return evaluate_sets(pair.student, tok, sets, cfg.eval, label, quiet, view)

    log_path = run_dir / "train_log.jsonl"
    context = PolicyContext(
        cfg, task, pair.student, pair.teacher, tok, pair.vocab_size, device, run_seeds(cfg.seed)["policy"]
    )
    policy = method.policy(context) if method.policy else None
    if cfg.train.teacher_cache and teacher_cache.applies(method):
        policy = teacher_cache.CachedTeacher(context)
    main = task.metrics[0]
    path = run_dir / "record.json"
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "interrupted",
        "created": state.get("created"),
        "task": task.name,
        "method": method.name,
        "seed": cfg.seed,
        **distributed_info(cfg, dist),
        "main_metric": main,
        "config": cfg.to_dict(),
        "method_info": {
            "description": method.description,
            "paper": method.paper,
            "data_policy": method.data_policy,
            "uses_teacher": method.uses_teacher,
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        "models": pair.info,
        "data": {
            "source": str(mirror_dir(cfg.data) or "hub"),
            "train_file": train_split.source,
            "eval_file": sets[0].rows.source,
            "n_train": len(train_ex),
            "n_eval": len(eval_ex),
            "train_target_tokens": sum(len(e.target_ids) for e in train_ex),
            "eval_sets": eval_sets_info(sets, skipped),
        },
        "seeds": {**run_seeds(cfg.seed), "eval": eval_seeds(cfg.eval)},
        "policy": {},
        "resumed_from_step": state.get("resumed_from_step", []),
        "init": {},
        "timings": {"model_load_s": load_s},
        "metrics": {name: {"reference": references.get(name, {})} for name in set_names},
        "training": {},
        "paths": {"train_log": "train_log.jsonl", "checkpoints": CHECKPOINTS},
    }
    try:
        t0 = time.perf_counter()
        before, record["init"] = _before_training(cfg, pair, init_ex, state, checkpoints, score, sets, quiet)
        for name in set_names:
            record["metrics"][name]["before"] = before[name]
        record["timings"]["before_s"] = time.perf_counter() - t0

        trained = state.get("trained")
        if trained is None:
            _log(f"training [bold]{method.name}[/] ({method.description})", quiet)
            res = train(
                pair.student,
                pair.teacher,
                method,
                cfg.method,
                cfg.train,
                train_ex,
                lr=cfg.train.lr,
                epochs=cfg.train.epochs,
                seed=cfg.seed,
                vocab_size=pair.vocab_size,
                pad_id=tok.pad_token_id,
                log_path=log_path,
                label=f"train {method.name}",
                quiet=quiet,
                checkpoints=checkpoints,
                policy=policy,
                on_step=tracker.log_step,  # tracking:
            )
            state.put("trained", asdict(res))
        else:
            res = TrainResult(**trained)
            checkpoints.load_weights(pair.student)
        after_sets = score("eval trained student")
        if dist.is_main:
            samples = [s for r in after_sets.values() for s in r.samples]
            atomic_write_jsonl(run_dir / "samples.jsonl", samples)
            save_final(pair.student, tok, run_dir / "checkpoint")
    except KeyboardInterrupt as exc:
        record["init"] = record["init"] or state.get("init", {})
        for name, per_set in state.get("before", {}).items():
            record["metrics"].setdefault(name, {}).setdefault("before", per_set)
        rows = read_log(log_path) if log_path.is_file() else []
        record["training"] = summarize_log(rows, cfg.train.spike_factor)
        record["timings"]["wall_s"] = time.perf_counter() - wall0
        record["resume"] = {
            "checkpoint_step": checkpoints.latest_step(),
            "command": f"speckd-bench run --resume {run_id} --results-dir {results_dir}",
        }
        if dist.is_main:
            atomic_write_json(path, record)
        tracker.finish()  # tracking:
        raise RunInterrupted(
            f"run {run_id} {exc or 'interrupted'}; continue it with: {record['resume']['command']}"
        ) from None

    summary = summarize_log(read_log(log_path), cfg.train.spike_factor)
    if res.diverged_at is not None:
        summary["diverged_at_step"] = res.diverged_at
    lm_eval = run_lm_eval(pair.student, tok, cfg, quiet) if cfg.lm_eval.tasks and dist.is_main else None
    stages = [b for per_set in before.values() for b in per_set.values()]
    after_tokens = sum(r.new_tokens for r in after_sets.values())
    after_seconds = sum(r.seconds for r in after_sets.values())
    eval_tokens = after_tokens + sum(b.get("new_tokens", 0) for b in stages)
    eval_seconds = after_seconds + sum(b.get("seconds", 0.0) for b in stages)
    record["timings"].update(
        wall_s=time.perf_counter() - wall0,
        train_s=res.seconds,
        train_tokens_per_s=res.tokens_per_s,
        train_target_tokens=res.target_tokens,
        eval_s=after_seconds,
        eval_tokens_per_s=eval_tokens / eval_seconds if eval_seconds else 0.0,
    )
    for name, result in after_sets.items():
        record["metrics"][name]["after"] = result.summary()
    record["lm_eval"] = lm_eval
    record["training"] = summary
    record["policy"] = policy.summary() if policy else {}
    record["teacher_cache"] = record["policy"].pop("teacher_cache", {"used": False})
    record["paths"] = {"train_log": "train_log.jsonl", "samples": "samples.jsonl", "checkpoint": "checkpoint"}
    record["status"] = "complete"
    if dist.is_main:
        atomic_write_json(path, record)
        checkpoints.remove()  # the record is complete, nothing left to resume; weights stay in checkpoint/
    tracker.log_final(record["metrics"], res.steps)  # tracking:
    tracker.finish()  # tracking:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for es in sets:
        metric = es.task.metrics[0]
        raw_score = before[es.name].get("raw", {}).get("metrics", {}).get(metric)
        init_score = before[es.name].get("init", {}).get("metrics", {}).get(metric)
        after_score = after_sets[es.name].metrics[metric]
        _log(
            f"{es.name} {metric}: raw {fmt(raw_score)} -> init {fmt(init_score)} -> after {fmt(after_score)}",
            quiet,
        )
    _log(f"{record['timings']['wall_s']:.0f} s, record: {path}", quiet)
    if res.diverged_at is not None:
        raise UserError(
            f"run {run_id} diverged: non-finite loss at training step {res.diverged_at}; its record keeps "
            f"the last good weights (step {res.steps}): lower train.lr (now {cfg.train.lr:g}) and run again"
        )
    return path
