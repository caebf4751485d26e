"""`speckd-bench eval`: score a recorded run's checkpoint (or any model) on eval sets without training.

The result is an eval record (schema like a run record; `kind: eval`, `metrics: {set: summary}`) written
beside the run, at runs/<run-id>/evals/<eval-id>/record.json, or under evals/<eval-id>/ for a model that
is not a run's. Run records are never changed, so `table` keeps reading exactly what training produced.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speckd_bench.config.run_config import RunConfig, apply_overrides, config_from_dict, validate
from speckd_bench.data.tasks import DECODING_PRESETS, SUITES, TASKS, task_sources
from speckd_bench.distributed import process_context
from speckd_bench.engine.run_products import FINAL_CHECKPOINT
from speckd_bench.engine.run_state import verify_final
from speckd_bench.engine.scoring import (
    SAMPLES_FILE,
    EvalSets,
    Scoring,
    eval_speed,
    evaluate_student,
    lm_eval_scores,
    quiet_transformers,
)
from speckd_bench.engine.summary import check_main_metric
from speckd_bench.errors import UserError
from speckd_bench.evaluation.evaluate import build_eval_examples, eval_seeds
from speckd_bench.evaluation.lmeval import check_lm_eval
from speckd_bench.formatting import metric_digits, number
from speckd_bench.methods.discovery import method_config
from speckd_bench.models.loading import ModelPair, load_pair, load_teacher
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


def run_record(run_dir: Path) -> RunRecord:
    """The run's record; a garbled or incomplete one fails in one line."""
    try:
        return RunRecord.read(run_dir / RECORD_FILE)
    except RecordError as exc:
        raise UserError(f"{run_dir}/{RECORD_FILE} cannot be used: {exc}") from None


def config_of_run(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The run's recorded config (decoding, lengths; not its suite or lm-eval tasks: an eval scores what it
    is asked), then the suite's decoding preset unless the run already used that suite (its config holds
    the suite's decoding with the user's changes), then overrides (flags and --set)."""
    record = run_record(run_dir)
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


def _load_model(cfg: RunConfig, model_name: str, with_reference: bool) -> tuple[ModelPair, str]:
    """The model to score as a run's student, and where it came from. With a reference it is loaded as
    the run loaded its student: beside the run's teacher (float32 weights fingerprinted, then cast to
    model.teacher_dtype), sharing its tokenizer; without, alone by name (a checkpoint dir, built-in name
    or hub id)."""
    device = process_context().device
    if with_reference:
        return load_pair(replace(cfg.model, student=model_name), device), model_name
    model, tokenizer, source = load_teacher(model_name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    vocab = model.get_output_embeddings().weight.shape[0]
    return ModelPair(None, model, tokenizer, vocab, {"student": model_name}), source


def evaluate_model(cfg: RunConfig, model_name: str, out_dir: Path, run_id: str | None, quiet: bool) -> Path:
    """Load `model_name` (a checkpoint dir, built-in name or hub id), score the eval sets, write a record.
    A run's student (`run_id`) is scored against the run's own teacher, floors and fidelity."""
    wall0 = time.perf_counter()
    quiet_transformers()
    task = TASKS.get(cfg.task)
    check_lm_eval(cfg)
    with_reference = run_id is not None and cfg.eval.reference
    main = check_main_metric(cfg.eval.main_metric, task.name, task.metrics, with_reference)
    eval_sets = EvalSets.load(cfg)
    t0 = time.perf_counter()
    pair, source = _load_model(cfg, model_name, with_reference)
    load_s = time.perf_counter() - t0
    build_eval_examples(eval_sets.sets, pair.tokenizer, cfg.data)
    eval_id = new_run_id(cfg.task, "eval", cfg.seed)
    eval_dir = out_dir / eval_id
    try:
        eval_dir.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create {eval_dir} ({exc.strerror}); pass --results-dir DIR") from None
    scoring = Scoring.build(cfg, eval_sets, quiet, pair if with_reference else None)
    results = evaluate_student(scoring, pair.student, pair.tokenizer, "eval", eval_dir)
    lm_eval = lm_eval_scores(pair.student, pair.tokenizer, cfg, quiet)
    seconds, tokens = eval_speed(results)
    record = RunRecord(
        kind="eval",
        eval_id=eval_id,
        run_id=run_id,
        status=COMPLETE,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model={"name": model_name, "source": source},
        task=cfg.task,
        main_metric=main,
        config=portable_config(cfg.to_dict()),
        versions=versions(),
        git_commit=git_commit(),
        hardware=hardware(),
        data={"eval_sets": eval_sets.info(), "task_sources": task_sources(eval_sets.names)},
        seeds={"eval": eval_seeds(cfg.eval)},
        timings={
            "wall_s": time.perf_counter() - wall0,
            "model_load_s": load_s,
            "eval_s": seconds,
            "eval_tokens_per_s": tokens / seconds if seconds else 0.0,
        },
        metrics={
            name: {**r.summary(), "reference": scoring.references.get(name, {})}
            for name, r in results.items()
        },
        lm_eval=lm_eval,
        paths={"samples": SAMPLES_FILE},
    )
    path = eval_dir / RECORD_FILE
    record.write(path)
    if not quiet:
        for name, r in results.items():
            scores = ", ".join(f"{k} {number(v, metric_digits(k))}" for k, v in r.metrics.items())
            console.print(f"{name}: {scores}", markup=False, soft_wrap=True)
        console.print(f"record: {path}", markup=False, soft_wrap=True)
    return path


def run_checkpoint(run_dir: Path) -> Path:
    """The run's final student: a transformers directory (run_state.save_final) that matches its checksums."""
    checkpoint = run_dir / FINAL_CHECKPOINT
    if not (checkpoint / "config.json").is_file():
        raise UserError(f"run {run_dir.name} has no checkpoint at {checkpoint}")
    verify_final(run_dir, checkpoint)
    return checkpoint


def eval_run(run: str, results_dir: Path, overrides: dict[str, Any], quiet: bool) -> Path:
    """Score a recorded run's checkpoint; the eval record goes to runs/<run-id>/evals/."""
    run_dir = run_dir_of(run, results_dir)
    cfg = config_of_run(run_dir, overrides)  # the cheap checks (record, plugin tasks) before the digests
    checkpoint = run_checkpoint(run_dir)
    return evaluate_model(cfg, str(checkpoint), run_dir / "evals", run_dir.name, quiet)
