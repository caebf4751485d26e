"""The main metric of a run (eval.main_metric, else the task's first) and the few lines a finished run
prints: the main metric from the raw through the init to the trained student, the task's own metric,
lm-eval's scores, and a plain warning when the trained student's outputs are degenerate.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from speckd_bench.api.metrics import FIDELITY, PER_PROMPT_FIDELITY, better
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.evaluation.degeneracy import degenerate_reasons
from speckd_bench.formatting import metric_digits, number
from speckd_bench.progress import console


def main_metric(setting: str, task_metrics: Sequence[str]) -> str:
    """The metric a run is judged on: the setting, or the task's first metric when it is empty."""
    return setting or task_metrics[0]


def check_main_metric(setting: str, task: str, task_metrics: Sequence[str], fidelity: bool) -> str:
    """The resolved main metric, or a one-line UserError when the run will not compute it (`fidelity`:
    the run scores the student against a teacher)."""
    fidelity_names = [m.name for m in (*FIDELITY, *PER_PROMPT_FIDELITY)] if fidelity else []
    valid = list(dict.fromkeys([*task_metrics, *fidelity_names]))
    name = main_metric(setting, task_metrics)
    if name not in valid:
        raise UserError(
            f"eval.main_metric={name!r} is not computed by a run of task {task}"
            f"{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
            + ("" if fidelity else " (the fidelity metrics need eval.reference=true)")
        )
    return name


def _direction(metric: str) -> str:
    return f"({better(metric).value} is better)"


def _progress(eval_set: str, metric: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    steps = [(stage, before.get(stage, {}).get("metrics", {}).get(metric)) for stage in ("raw", "init")]
    steps.append(("after", after.get("metrics", {}).get(metric)))
    text = " -> ".join(f"{label} {number(v, metric_digits(metric))}" for label, v in steps)
    return f"{eval_set} {metric}: {text} {_direction(metric)}"


def _lm_eval_lines(lm_eval: Mapping[str, Any] | None) -> list[str]:
    """One line per lm-eval task with its scores (no stderr, no alias)."""
    lines = []
    for task, scores in ((lm_eval or {}).get("results") or {}).items():
        shown = [
            f"{key.split(',')[0]} {number(value, 3)}"
            for key, value in scores.items()
            if isinstance(value, (int, float)) and "stderr" not in key
        ]
        if shown:
            lines.append(f"lm-eval {task}: {', '.join(shown)}")
    return lines


def degeneracy_warning(eval_set: str, after: Mapping[str, Any]) -> str | None:
    """The warning for degenerate outputs of the trained student on eval_set, None when they are not."""
    reasons = degenerate_reasons(after.get("degeneracy") or {})
    if not reasons:
        return None
    return (
        f"warning: the trained student's outputs on {eval_set} are degenerate ({', '.join(reasons)}): its "
        "text metrics measure noise"
    )


def summary_lines(
    sets: Sequence[tuple[str, Sequence[str]]],
    main: str,
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    lm_eval: Mapping[str, Any] | None,
    wall_s: float,
    path: Path,
) -> list[str]:
    """The run's result in a few lines. `sets`: (eval set, its task's metrics); `before`: per set the raw
    and init summaries; `after`: per set the trained student's summary (EvalResult.summary())."""
    lines = []
    for name, task_metrics in sets:
        scored = after[name].get("metrics", {})
        lead = main if main in scored else task_metrics[0]
        shown = dict.fromkeys([lead, task_metrics[0]])
        lines += [_progress(name, m, before.get(name, {}), after[name]) for m in shown]
        warning = degeneracy_warning(name, after[name])
        lines += [warning] if warning else []
    lines += _lm_eval_lines(lm_eval)
    lines.append(f"{wall_s:.0f} s, record: {path}")
    return lines


def print_summary(lines: Sequence[str], quiet: bool) -> None:
    """On stdout, or with --quiet on stderr (its stdout is the record's path alone, for scripts)."""
    for line in lines:
        if quiet:
            print(line, file=sys.stderr)
        else:
            console.print(line, markup=False)
