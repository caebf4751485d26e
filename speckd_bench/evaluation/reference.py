"""The reference rows of a comparison: the teacher's scores (decoded once per teacher and eval protocol,
then cached with its outputs) and the trivial floors of every eval set."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import torch

from speckd_bench.api import metrics
from speckd_bench.caches import (
    atomic_write_json,
    building,
    cache_dir,
    digest,
    read_json,
)
from speckd_bench.config.result_keys import eval_identity
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import build_examples, examples_digest
from speckd_bench.data.rows import DataUnavailable, load_rows
from speckd_bench.data.tasks import TASKS, task_digest
from speckd_bench.distributed import process_context
from speckd_bench.evaluation import degeneracy, fidelity, generate
from speckd_bench.evaluation import evaluate as evaluate_module
from speckd_bench.evaluation import floors as floors_module
from speckd_bench.evaluation.evaluate import EvalSet, TeacherView, evaluate
from speckd_bench.evaluation.fidelity_cache import stored_teacher_logits
from speckd_bench.evaluation.floors import CHOICE_ROWS, fit_token_floors, floor_scores, token_floor_fidelity
from speckd_bench.evaluation.teacher_answers import answers_path, differing, entry_path
from speckd_bench.progress import warn


def _train_rows(es: EvalSet, cfg: RunConfig) -> list[dict[str, Any]] | None:
    """The set's training rows (to choose the constant floor on), or None where it has none here."""
    if "train" not in es.task.splits:
        return None
    try:
        return load_rows(es.task, "train", cfg.data)
    except DataUnavailable:
        return None


def teacher_key(cfg: RunConfig, models: dict[str, Any], es: EvalSet) -> str:
    """The teacher's score on one eval set depends on the teacher's weights, its dtype, the eval settings,
    the exact examples (which cover prompt format, lengths and tokenizer) and the task's scoring."""
    return digest({**eval_identity(cfg, models), **scored_identity(es)})


def _entry_problem(path: Path) -> str | None:
    """Why a cached teacher score cannot be used (garbled or cut short), or None."""
    try:
        entry = read_json(path)
    except ValueError as exc:
        return str(exc)
    fields = isinstance(entry, dict) and {"key", "summary", "outputs"} <= entry.keys()
    return None if fields and isinstance(entry["outputs"], dict) else "not a teacher score entry"


def _teacher_eval(cfg: RunConfig, pair: Any, es: EvalSet, quiet: bool) -> dict[str, Any]:
    """{"key", "summary", "outputs": {eval seed: texts}}, from the cache or decoded now and cached."""
    key = teacher_key(cfg, pair.info, es)
    path = entry_path(es.name, key)
    with building(path, _entry_problem) as hit:
        return read_json(path) if hit else _decode_teacher(cfg, pair, es, key, path, quiet)


def reference_teacher(teacher: Any, reference_dtype: str) -> Any:
    """The teacher that decodes the reference answers: itself, or a float32 copy (eval.reference_dtype) of
    the teacher as the run holds it: a bfloat16 teacher's rounded weights, computed in float32, whose
    answers are the same on every CPU kernel path."""
    if reference_dtype == "teacher" or next(teacher.parameters()).dtype == torch.float32:
        return teacher
    return copy.deepcopy(teacher).to(torch.float32)


def _decode_teacher(cfg: RunConfig, pair: Any, es: EvalSet, key: str, path: Path, quiet: bool) -> dict:
    """The teacher's scores and outputs on one eval set, decoded now and cached at `path`."""
    teacher, tokenizer = reference_teacher(pair.teacher, cfg.eval.reference_dtype), pair.tokenizer
    res = evaluate(
        teacher,
        tokenizer,
        es.examples,
        es.task.metrics,
        cfg.eval,
        f"eval teacher {es.name}",
        quiet,
        es.task.extract_prediction,
    )
    outputs: dict[str, list[str]] = {}
    for sample in res.samples:
        outputs.setdefault(str(sample["eval_seed"]), []).append(sample["output"])
    entry = {"key": key, "summary": res.summary(), "outputs": outputs}
    committed = answers_path(Path(cfg.results_dir), es.name, key)
    changed = differing(committed, outputs)
    if changed is not None and changed[0]:
        warn(
            f"{changed[0]} of {changed[1]} teacher answers on {es.name} differ from the committed ones in "
            f"{committed}: this machine decodes the reference rows differently, so its teacher and floor "
            "rows are not that leaderboard's (a float32 reference decode, eval.reference_dtype=float32, is "
            "the same on every CPU kernel path)"
        )
    if process_context().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, entry)
    return entry


def _floors_problem(path: Path) -> str | None:
    """Why a cached token-floor entry cannot be used, or None."""
    try:
        entry = read_json(path)
    except ValueError as exc:
        return str(exc)
    return None if isinstance(entry, dict) and isinstance(entry.get("floors"), dict) else "not a floor entry"


def _token_floors(
    cfg: RunConfig, pair: Any, es: EvalSet, train_rows: list[dict[str, Any]], teacher_key: str
) -> dict[str, Any]:
    """The unigram and bigram floors' fidelity on the set's teacher-forced examples: fitted on the training
    responses, scored against the teacher (a forward pass over every fidelity row), cached per teacher
    score key (teacher, settings, examples, scoring code), training examples and floor code."""
    train = build_examples(es.task, train_rows[:CHOICE_ROWS], pair.tokenizer, cfg.data)
    key = digest([teacher_key, examples_digest(train), Path(str(floors_module.__file__)).read_text("utf-8")])
    path = cache_dir() / "floors" / f"{es.name}-fidelity-{key}.json"
    with building(path, _floors_problem) as hit:
        if hit:
            return read_json(path)["floors"]
        token_floors = fit_token_floors(train, pair.vocab_size)
        pad_id = pair.tokenizer.pad_token_id
        scores = token_floor_fidelity(token_floors, pair.teacher, es.forced, pad_id, pair.vocab_size)
        if process_context().is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"key": key, "floors": scores})
        return scores


def reference_rows(
    cfg: RunConfig, pair: Any, sets: list[EvalSet], quiet: bool
) -> tuple[dict[str, dict[str, Any]], TeacherView]:
    """Per eval set {"teacher": summary + key, "floors": {...}}, and the view the fidelity metrics use."""
    view = TeacherView(pair.teacher, pair.vocab_size)
    rows: dict[str, dict[str, Any]] = {}
    for es in sets:
        entry = _teacher_eval(cfg, pair, es, quiet)
        view.outputs[es.name] = {int(seed): texts for seed, texts in entry["outputs"].items()}
        train_rows = _train_rows(es, cfg)
        floors = floor_scores(es.task, es.rows.rows, train_rows)
        if train_rows:
            floors |= _token_floors(cfg, pair, es, train_rows, entry["key"])
        rows[es.name] = {"teacher": {**entry["summary"], "key": entry["key"]}, "floors": floors}
        if cfg.eval.keep_teacher_logits and process_context().world == 1:
            view.logits[es.name] = stored_teacher_logits(
                eval_identity(cfg, pair.info)["teacher"], pair.teacher, es.forced,
                pair.tokenizer.pad_token_id, pair.vocab_size,
            )  # fmt: skip
    return rows, view


SCORING_MODULES = (evaluate_module, fidelity, generate, degeneracy, metrics, sys.modules[__name__])
"""The code that turns a model and examples into scores: decoding, the text and fidelity metrics, and this
module (which teacher decodes the reference answers)."""


@functools.cache
def scoring_code() -> str:
    """A digest of the scoring modules' source: a cached score made by other scoring code is never
    reused (a metric redefined, say from a mean over prompts to one over tokens)."""
    return digest([Path(str(m.__file__)).read_text(encoding="utf-8") for m in SCORING_MODULES])


def scored_identity(es: EvalSet) -> dict[str, Any]:
    """What a score on one eval set depends on besides the model and the settings: the exact examples
    (answered, and teacher-forced where more), the task's metrics and answer extraction, and the scoring
    code."""
    identity = {
        "set": es.name,
        "examples": examples_digest(es.examples),
        "task": task_digest(TASKS.get(es.name)),
        "scoring": scoring_code(),
    }
    if len(es.forced) > len(es.examples):
        identity["forced"] = examples_digest(es.forced)
    return identity
