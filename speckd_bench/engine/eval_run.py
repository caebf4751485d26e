"""`speckd-bench eval`: score a recorded run's checkpoint (or any model) on eval sets without training.

The result is an eval record (schema like a run record; `kind: eval`, `metrics: {set: summary}`) written
beside the run, at runs/<run-id>/evals/<eval-id>/record.json, or under evals/<eval-id>/ for a model that
is not a run's. Run records are never changed, so `table` keeps reading exactly what training produced.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from speckd_bench.caches import atomic_write_jsonl
from speckd_bench.config.run_config import RunConfig, apply_overrides, config_from_dict, validate
from speckd_bench.data.tasks import DECODING_PRESETS, SUITES, TASKS, task_sources
from speckd_bench.errors import UserError
from speckd_bench.evaluation.evaluate import (
    TeacherView,
    build_eval_examples,
    eval_seeds,
    eval_sets_info,
    evaluate_sets,
    load_eval_sets,
    warn_skipped,
)
from speckd_bench.evaluation.lmeval import check_lm_eval, run_lm_eval
from speckd_bench.evaluation.reference import reference_rows
from speckd_bench.methods.discovery import method_config
from speckd_bench.models.loading import fingerprint, load_teacher
from speckd_bench.progress import console
from speckd_bench.records.environment import git_commit, hardware, new_run_id, versions
from speckd_bench.records.run_record import COMPLETE, RECORD_FILE, RecordError, RunRecord, portable_config


def run_dir_of(run: str, results_dir: Path) -> Path:
    """A run id under results_dir/runs, or a path to a run directory."""
    for candidate in (Path(run), results_dir / "runs" / run):
        if (candidate / RECORD_FILE).is_file():
            return candidate
    raise UserError(f"no run {run!r}: neither {run}/record.json nor {results_dir}/runs/{run}/record.json")


def _check_plugin_task(record: RunRecord) -> None:
    """A run of a plugin task that is not registered now: name the plugin directory the run used."""
    source = (record.data.get("task_sources") or {}).get(record.task)
    if record.task not in TASKS and isinstance(source, dict) and source.get("plugin_dir"):
        raise UserError(
            f"run {record.run_id} used task {record.task} from plugin directory {source['plugin_dir']}; "
            f"pass --plugins {source['plugin_dir']}"
        )


def config_of_run(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The run's recorded config (decoding, lengths; not its suite or lm-eval tasks: an eval scores what it
    is asked), then the suite's decoding preset unless the run already used that suite (its config holds
    the suite's decoding with the user's changes), then overrides (flags and --set)."""
    try:
        record = RunRecord.read(run_dir / RECORD_FILE)
    except RecordError as exc:
        raise UserError(f"{run_dir}/{RECORD_FILE} cannot be used: {exc}") from None
    _check_plugin_task(record)
    cfg = config_from_dict(record.config, method_config, f"{run_dir}/{RECORD_FILE}")
    run_suite = cfg.eval.suite
    cfg.eval.suite, cfg.lm_eval.tasks = "", []
    suite = str(overrides.get("eval.suite") or "")
    decoding = SUITES.get(suite).decoding if suite and suite != run_suite else None
    apply_overrides(cfg, DECODING_PRESETS[decoding] if decoding else {}, f"suite {suite}")
    apply_overrides(cfg, overrides, "--set")
    validate(cfg)
    return cfg


def _reference(
    cfg: RunConfig, student: Any, tokenizer: Any, sets: list[Any], device: torch.device, quiet: bool
) -> tuple[dict[str, Any], TeacherView]:
    """The run's teacher loaded as in training, then its (cached) scores, the floors and the view the
    fidelity metrics compare the student with."""
    teacher, _, _ = load_teacher(cfg.model.teacher)
    info = {"teacher_fingerprint": fingerprint(teacher)}
    teacher.to(device=device, dtype=getattr(torch, cfg.model.teacher_dtype)).eval().requires_grad_(False)
    vocab = min(m.get_output_embeddings().weight.shape[0] for m in (teacher, student))
    pair = SimpleNamespace(teacher=teacher, tokenizer=tokenizer, vocab_size=vocab, info=info)
    return reference_rows(cfg, pair, sets, quiet)


def evaluate_model(cfg: RunConfig, model_name: str, out_dir: Path, run_id: str | None, quiet: bool) -> Path:
    """Load `model_name` (a checkpoint dir, built-in name or hub id), score the eval sets, write a record."""
    wall0 = time.perf_counter()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    TASKS.get(cfg.task)
    check_lm_eval(cfg)
    sets, skipped = load_eval_sets(cfg.task, cfg.eval.suite, cfg.data)
    warn_skipped(skipped)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model, tokenizer, source = load_teacher(model_name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    load_s = time.perf_counter() - t0
    build_eval_examples(sets, tokenizer, cfg.data)
    eval_id = new_run_id(cfg.task, "eval", cfg.seed)
    eval_dir = out_dir / eval_id
    try:
        eval_dir.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create {eval_dir} ({exc.strerror}); pass --results-dir DIR") from None
    references, view = {}, None
    if run_id is not None and cfg.eval.reference:  # a run's student: its own teacher, floors and fidelity
        references, view = _reference(cfg, model, tokenizer, sets, device, quiet)
    results = evaluate_sets(model, tokenizer, sets, cfg.eval, "eval", quiet, view)
    lm_eval = run_lm_eval(model, tokenizer, cfg, quiet) if cfg.lm_eval.tasks else None
    atomic_write_jsonl(eval_dir / "samples.jsonl", [s for r in results.values() for s in r.samples])
    seconds = sum(r.seconds for r in results.values())
    tokens = sum(r.new_tokens for r in results.values())
    record = RunRecord(
        kind="eval",
        eval_id=eval_id,
        run_id=run_id,
        status=COMPLETE,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model={"name": model_name, "source": source},
        task=cfg.task,
        main_metric=TASKS.get(cfg.task).metrics[0],
        config=portable_config(cfg.to_dict()),
        versions=versions(),
        git_commit=git_commit(),
        hardware=hardware(),
        data={
            "eval_sets": eval_sets_info(sets, skipped),
            "task_sources": task_sources([s.name for s in sets]),
        },
        seeds={"eval": eval_seeds(cfg.eval)},
        timings={
            "wall_s": time.perf_counter() - wall0,
            "model_load_s": load_s,
            "eval_s": seconds,
            "eval_tokens_per_s": tokens / seconds if seconds else 0.0,
        },
        metrics={name: {**r.summary(), "reference": references.get(name, {})} for name, r in results.items()},
        lm_eval=lm_eval,
        paths={"samples": "samples.jsonl"},
    )
    path = eval_dir / RECORD_FILE
    record.write(path)
    if not quiet:
        for name, r in results.items():
            scores = ", ".join(f"{k} {v:.2f}" for k, v in r.metrics.items())
            console.print(f"{name}: {scores}", markup=False, soft_wrap=True)
        console.print(f"record: {path}", markup=False, soft_wrap=True)
    return path


def run_checkpoint(run_dir: Path) -> Path:
    """The run's final student: a transformers directory (checkpoint.save_final)."""
    checkpoint = run_dir / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        raise UserError(f"run {run_dir.name} has no checkpoint at {checkpoint}")
    return checkpoint


def eval_run(run: str, results_dir: Path, overrides: dict[str, Any], quiet: bool) -> Path:
    """Score a recorded run's checkpoint; the eval record goes to runs/<run-id>/evals/."""
    run_dir = run_dir_of(run, results_dir)
    checkpoint = run_checkpoint(run_dir)
    cfg = config_of_run(run_dir, overrides)
    return evaluate_model(cfg, str(checkpoint), run_dir / "evals", run_dir.name, quiet)
