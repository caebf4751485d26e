"""The evaluation stage that `run` (before and after training) and `speckd-bench eval` share: a run's eval
sets, the teacher's reference rows and view, and scoring a student on every set with its samples kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils import logging as transformers_logging

from speckd_bench.caches import atomic_write_jsonl
from speckd_bench.config.run_config import RunConfig
from speckd_bench.distributed import process_context
from speckd_bench.evaluation.evaluate import (
    EvalResult,
    EvalSet,
    TeacherView,
    eval_sets_info,
    evaluate_sets,
    load_eval_sets,
    warn_skipped,
)
from speckd_bench.evaluation.lmeval import TaskScores, failure_line, rerun_command, run_lm_eval
from speckd_bench.evaluation.reference import reference_rows
from speckd_bench.models.loading import ModelPair
from speckd_bench.progress import warn

SAMPLES_FILE = "samples.jsonl"


def quiet_transformers() -> None:
    """No download bars or warnings from transformers: the harness reports its own progress."""
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


@dataclass
class EvalSets:
    """A run's eval sets (examples built once a tokenizer is loaded) and the suite's sets skipped here."""

    sets: list[EvalSet]
    skipped: dict[str, str]

    @classmethod
    def load(cls, cfg: RunConfig) -> EvalSets:
        """The rows of the run's eval sets; says on stderr which suite sets are skipped."""
        sets, skipped = load_eval_sets(cfg.task, cfg.eval.suite, cfg.data)
        warn_skipped(skipped)
        return cls(sets, skipped)

    @property
    def names(self) -> list[str]:
        return [es.name for es in self.sets]

    def info(self) -> dict[str, Any]:
        """The record's eval_sets part: per set its source and rows, or why it was skipped."""
        return eval_sets_info(self.sets, self.skipped)


@dataclass
class Scoring:
    """How a student is scored: the eval sets and settings, and (with a teacher reference) the teacher's
    reference rows per set and the view the fidelity metrics compare the student with."""

    cfg: RunConfig
    eval: EvalSets
    quiet: bool
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    view: TeacherView | None = None

    @classmethod
    def build(cls, cfg: RunConfig, eval_sets: EvalSets, quiet: bool, reference: ModelPair | None) -> Scoring:
        """Scoring against the teacher of `reference` (its cached scores, the floors and its view), or
        without a reference when None."""
        if reference is None:
            return cls(cfg, eval_sets, quiet)
        references, view = reference_rows(cfg, reference, eval_sets.sets, quiet)
        return cls(cfg, eval_sets, quiet, references, view)

    def score(self, student: Any, tokenizer: Any, label: str) -> dict[str, EvalResult]:
        """Scores of `student` as it is now on every eval set."""
        return evaluate_sets(student, tokenizer, self.eval.sets, self.cfg.eval, label, self.quiet, self.view)


def evaluate_student(
    scoring: Scoring, student: Any, tokenizer: Any, label: str, folder: Path
) -> dict[str, EvalResult]:
    """The evaluation stage: score `student` on every eval set and keep its samples in the record's
    folder (written by the main process)."""
    results = scoring.score(student, tokenizer, label)
    if process_context().is_main:
        atomic_write_jsonl(folder / SAMPLES_FILE, [s for r in results.values() for s in r.samples])
    return results


def eval_speed(results: dict[str, EvalResult]) -> tuple[float, int]:
    """(seconds, new tokens) of the decoding behind `results`."""
    return sum(r.seconds for r in results.values()), sum(r.new_tokens for r in results.values())


def lm_eval_scores(
    student: Any,
    tokenizer: Any,
    cfg: RunConfig,
    quiet: bool,
    run_id: str | None = None,
    done: dict[str, TaskScores] | None = None,
    on_task: Callable[[str, TaskScores], None] | None = None,
) -> dict[str, Any] | None:
    """lm-evaluation-harness's scores of `student` (the main process), or None when no task is asked.
    For a trained run (`run_id`) a failure of lm-eval does not lose the run: its scores are
    {"error": one line}, and stderr says how to run them again on the saved student. `done` and `on_task`:
    run_lm_eval's (the task names scored before an interruption; each name's scores as it finishes)."""
    if not cfg.lm_eval.tasks or not process_context().is_main:
        return None
    if run_id is None:
        return run_lm_eval(student, tokenizer, cfg, quiet)
    try:
        return run_lm_eval(student, tokenizer, cfg, quiet, done, on_task)
    except Exception as exc:  # whatever lm-eval raises, the trained student and its scores are kept
        line = failure_line(exc)
        warn(
            f"warning: lm-eval failed ({line}); run {run_id} is recorded without its lm-eval scores; "
            f"run them with: {rerun_command(run_id, cfg)}"
        )
        return {"error": line}
