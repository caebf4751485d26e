"""One run = load data and models, warm-start (cached), train with the method, evaluate, record."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from speckd_bench.config import RunConfig
from speckd_bench.data import build_examples, load_split, mirror_dir
from speckd_bench.divergences import DIVERGENCES
from speckd_bench.errors import UserError
from speckd_bench.evaluate import (
    EvalResult,
    EvalSet,
    build_eval_examples,
    eval_seeds,
    evaluate_sets,
    load_eval_sets,
    warn_skipped,
)
from speckd_bench.lmeval import check_lm_eval, run_lm_eval
from speckd_bench.methods import METHODS, Method
from speckd_bench.models import load_pair
from speckd_bench.progress import console
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
from speckd_bench.train import train
from speckd_bench.warmstart import WarmStart


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
    check_lm_eval(cfg)
    if method.uses_teacher:
        DIVERGENCES.get(cfg.method.divergence)
    if "train" not in task.splits:
        raise UserError(
            f"task {task.name} has no train split; train on another task and evaluate on this one"
        )
    return task, method


def eval_sets_info(sets: list[EvalSet], skipped: dict[str, str]) -> dict[str, Any]:
    """Per eval set: where its rows came from and how many were scored, or why it was skipped."""
    info: dict[str, Any] = {es.name: {"source": es.rows.source, "n_eval": len(es.examples)} for es in sets}
    info.update({name: {"skipped": reason} for name, reason in skipped.items()})
    return info


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        console.print(msg)


def run_once(cfg: RunConfig, quiet: bool = False) -> Path:
    """Train, evaluate and record one seed; returns the record's path."""
    wall0 = time.perf_counter()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    task, method = resolve_names(cfg)
    results_dir = Path(cfg.results_dir)
    check_writable(results_dir)
    train_split = load_split(task, "train", cfg.data)
    train_rows = train_split.rows[: cfg.data.max_train_examples]
    sets, skipped = load_eval_sets(cfg.task, cfg.eval.suite, cfg.data)
    warn_skipped(skipped)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    pair = load_pair(cfg.model, device, with_teacher=method.uses_teacher)
    load_s = time.perf_counter() - t0
    tok = pair.tokenizer
    train_ex = build_examples(task, train_rows, tok, cfg.data)
    build_eval_examples(sets, tok, cfg.data)
    eval_ex = sets[0].examples
    run_id = new_run_id(cfg.task, cfg.method.name, cfg.seed)
    run_dir = results_dir / "runs" / run_id
    run_dir.mkdir(parents=True)
    n_eval = " + ".join(f"{len(es.examples)} {es.name}" for es in sets)
    _log(f"[bold]{run_id}[/]: {len(train_ex)} train / {n_eval} eval rows, device {device}", quiet)

    def score(label: str) -> dict[str, EvalResult]:
        return evaluate_sets(pair.student, tok, sets, cfg.eval, label, quiet)

    def cache_names(stage: str) -> dict[str, str]:
        return {es.name: stage if es.name == cfg.task else f"{stage}-{es.name}" for es in sets}

    def store(stage: str, summaries: dict[str, dict[str, Any]]) -> None:
        for name, key in cache_names(stage).items():
            warm.store_eval(key, summaries[name])

    def cached_or_score(stage: str, label: str) -> dict[str, dict[str, Any]]:
        """Summaries per set of the raw or init student, from the warm-start cache when it has them."""
        keys = cache_names(stage)
        cached = {s: warm.cached_eval(k) for s, k in keys.items()} if cfg.train.init_sft_epochs else {}
        if not cached or any(v is None for v in cached.values()):
            cached = {s: r.summary() for s, r in score(label).items()}
        store(stage, cached)
        return cached

    before: dict[str, dict[str, Any]] = {es.name: {} for es in sets}
    warm = WarmStart(cfg)
    init_info: dict[str, Any] = {"enabled": cfg.train.init_sft_epochs > 0}
    raw: dict[str, dict[str, Any]] | None = None
    t0 = time.perf_counter()
    if cfg.eval.eval_before:
        raw = cached_or_score("raw", "eval raw student")
        for name, summary in raw.items():
            before[name]["raw"] = summary
    if cfg.train.init_sft_epochs:
        init_info.update(key=warm.key, path=str(warm.dir), reused=warm.exists())
        if warm.exists():
            warm.load_into(pair.student)
        else:
            sft = METHODS.get("sft")
            log = run_dir / "init_log.jsonl"
            res = train(
                pair.student,
                None,
                sft,
                cfg.method,
                cfg.train,
                train_ex,
                lr=cfg.train.init_lr,
                epochs=cfg.train.init_sft_epochs,
                seed=cfg.seed,
                vocab_size=pair.vocab_size,
                pad_id=tok.pad_token_id,
                log_path=log,
                label="init SFT",
                quiet=quiet,
            )
            warm.save(
                pair.student,
                log,
                {"steps": res.steps, "seconds": res.seconds, "tokens_per_s": res.tokens_per_s},
            )
            log.unlink()
        init_info["training"] = summarize_log(read_log(warm.dir / "train_log.jsonl"), cfg.train.spike_factor)
        init_info["seconds_when_built"] = warm.meta()["seconds"]
        if raw is not None:
            store("raw", raw)
        if cfg.eval.eval_before:
            for name, summary in cached_or_score("init", "eval init student").items():
                before[name]["init"] = summary
    before_s = time.perf_counter() - t0

    log_path = run_dir / "train_log.jsonl"
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
    )
    after_sets = score("eval trained student")
    atomic_write_jsonl(run_dir / "samples.jsonl", [s for r in after_sets.values() for s in r.samples])
    checkpoint = run_dir / "checkpoint"
    pair.student.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)
    lm_eval = run_lm_eval(pair.student, tok, cfg, quiet) if cfg.lm_eval.tasks else None

    log_rows = read_log(log_path)
    summary = summarize_log(log_rows, cfg.train.spike_factor)
    if res.diverged_at is not None:
        summary["diverged_at_step"] = res.diverged_at
    stages = [b for per_set in before.values() for b in per_set.values()]
    after_tokens = sum(r.new_tokens for r in after_sets.values())
    after_seconds = sum(r.seconds for r in after_sets.values())
    eval_tokens = after_tokens + sum(b.get("new_tokens", 0) for b in stages)
    eval_seconds = after_seconds + sum(b.get("seconds", 0.0) for b in stages)
    main = task.metrics[0]
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "complete",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "method": method.name,
        "seed": cfg.seed,
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
        "seeds": {
            "train": cfg.seed,
            "data_order": cfg.seed,
            "gate": cfg.seed + 1,
            "eval": eval_seeds(cfg.eval),
        },
        "init": init_info,
        "timings": {
            "wall_s": time.perf_counter() - wall0,
            "model_load_s": load_s,
            "before_s": before_s,
            "train_s": res.seconds,
            "train_tokens_per_s": res.tokens_per_s,
            "train_target_tokens": res.target_tokens,
            "eval_s": after_seconds,
            "eval_tokens_per_s": eval_tokens / eval_seconds if eval_seconds else 0.0,
        },
        "metrics": {name: {"before": before[name], "after": r.summary()} for name, r in after_sets.items()},
        "lm_eval": lm_eval,
        "training": summary,
        "paths": {"train_log": "train_log.jsonl", "samples": "samples.jsonl", "checkpoint": "checkpoint"},
    }
    path = run_dir / "record.json"
    atomic_write_json(path, record)
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
    return path
