"""One run = load data and models, warm-start (cached), train with the method, evaluate, record."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from speckd_bench.config import RunConfig
from speckd_bench.data import build_examples, load_rows, mirror_dir
from speckd_bench.divergences import DIVERGENCES
from speckd_bench.errors import UserError
from speckd_bench.evaluate import EvalResult, eval_seeds, evaluate
from speckd_bench.methods import METHODS, Method, PolicyContext, check_method
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
from speckd_bench.train import run_seeds, train
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
    if method.uses_teacher:
        DIVERGENCES.get(cfg.method.divergence)
    check_method(method, cfg.method)
    if "train" not in task.splits:
        raise UserError(
            f"task {task.name} has no train split; train on another task and evaluate on this one"
        )
    return task, method


@dataclass
class _Stage:
    result: EvalResult | None
    summary: dict[str, Any]


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
    train_rows = load_rows(task, "train", cfg.data)[: cfg.data.max_train_examples]
    eval_rows = load_rows(task, "eval", cfg.data)[: cfg.data.max_eval_examples]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    pair = load_pair(cfg.model, device, with_teacher=method.uses_teacher or method.policy is not None)
    load_s = time.perf_counter() - t0
    tok = pair.tokenizer
    train_ex = build_examples(task, train_rows, tok, cfg.data)
    eval_ex = build_examples(task, eval_rows, tok, cfg.data)
    run_id = new_run_id(cfg.task, cfg.method.name, cfg.seed)
    run_dir = results_dir / "runs" / run_id
    run_dir.mkdir(parents=True)
    _log(f"[bold]{run_id}[/]: {len(train_ex)} train / {len(eval_ex)} eval rows, device {device}", quiet)

    def score(label: str) -> EvalResult:
        return evaluate(pair.student, tok, eval_ex, task.metrics, cfg.eval, label, quiet)

    before: dict[str, Any] = {}
    warm = WarmStart(cfg)
    init_info: dict[str, Any] = {"enabled": cfg.train.init_sft_epochs > 0}
    raw: dict[str, Any] | None = None
    t0 = time.perf_counter()
    if cfg.eval.eval_before:
        raw = warm.cached_eval("raw") if cfg.train.init_sft_epochs else None
        raw = raw or score("eval raw student").summary()
        before["raw"] = raw
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
            warm.store_eval("raw", raw)
        if cfg.eval.eval_before:
            before["init"] = warm.cached_eval("init") or score("eval init student").summary()
            warm.store_eval("init", before["init"])
    before_s = time.perf_counter() - t0

    log_path = run_dir / "train_log.jsonl"
    policy_seed = run_seeds(cfg.seed)["policy"]
    context = PolicyContext(cfg, task, pair.student, pair.teacher, tok, pair.vocab_size, device, policy_seed)
    policy = method.policy(context) if method.policy else None
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
        policy=policy,
    )
    after = score("eval trained student")
    atomic_write_jsonl(run_dir / "samples.jsonl", after.samples)
    checkpoint = run_dir / "checkpoint"
    pair.student.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)

    log_rows = read_log(log_path)
    summary = summarize_log(log_rows, cfg.train.spike_factor)
    if res.diverged_at is not None:
        summary["diverged_at_step"] = res.diverged_at
    eval_tokens = after.new_tokens + sum(b.get("new_tokens", 0) for b in before.values())
    eval_seconds = after.seconds + sum(b.get("seconds", 0.0) for b in before.values())
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
            "train_file": task.splits["train"].mirror,
            "eval_file": task.splits["eval"].mirror,
            "n_train": len(train_ex),
            "n_eval": len(eval_ex),
            "train_target_tokens": sum(len(e.target_ids) for e in train_ex),
        },
        "seeds": {**run_seeds(cfg.seed), "eval": eval_seeds(cfg.eval)},
        "policy": policy.summary() if policy else {},
        "init": init_info,
        "timings": {
            "wall_s": time.perf_counter() - wall0,
            "model_load_s": load_s,
            "before_s": before_s,
            "train_s": res.seconds,
            "train_tokens_per_s": res.tokens_per_s,
            "train_target_tokens": res.target_tokens,
            "eval_s": after.seconds,
            "eval_tokens_per_s": eval_tokens / eval_seconds if eval_seconds else 0.0,
        },
        "metrics": {task.name: {"before": before, "after": after.summary()}},
        "training": summary,
        "paths": {"train_log": "train_log.jsonl", "samples": "samples.jsonl", "checkpoint": "checkpoint"},
    }
    path = run_dir / "record.json"
    atomic_write_json(path, record)
    raw_score = before.get("raw", {}).get("metrics", {}).get(main)
    init_score = before.get("init", {}).get("metrics", {}).get(main)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    _log(
        f"{main}: raw {fmt(raw_score)} -> init {fmt(init_score)} -> after {fmt(after.metrics[main])}"
        f"  ({record['timings']['wall_s']:.0f} s)  record: {path}",
        quiet,
    )
    return path
