"""Learning curves of a section's groups: the teacher-forced fidelity points each run recorded every
train.curve_every optimiser steps (record["training"]["curve"]), averaged over a group's training seeds on
the steps every one of its curves scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speckd_bench.api.metrics import FIDELITY_METRICS
from speckd_bench.leaderboard.runs import Run, is_finite
from speckd_bench.leaderboard.sections import Group, Section

_NOT_METRICS = ("step", "seconds")


@dataclass
class GroupCurve:
    """One group's curve of one metric: mean, min and max over its runs' curves at each common step."""

    group: Group
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int
    """Runs averaged (those whose curve holds the metric)."""
    note: str | None = None
    """What was left out: runs without a curve, steps not scored by every run, or the whole group."""


def run_curve(run: Run) -> dict[int, dict[str, float]]:
    """Step -> {metric: value} of a run's recorded curve; {} without one (malformed points and non-finite
    values left out)."""
    training = run.record.training
    points = training.get("curve") if isinstance(training, dict) else None
    curve: dict[int, dict[str, float]] = {}
    for point in points if isinstance(points, list) else []:
        step = point.get("step") if isinstance(point, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            values = {k: float(v) for k, v in point.items() if k not in _NOT_METRICS and is_finite(v)}
            curve[step] = values
    return curve


def group_curve(group: Group, metric: str) -> GroupCurve:
    """The group's mean curve of `metric` on the steps all its curves share (empty steps when none)."""
    curves = [{s: p[metric] for s, p in run_curve(r).items() if metric in p} for r in group.runs]
    curves = [c for c in curves if c]
    common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = np.array([[c[s] for s in common] for c in curves]).reshape(len(curves), len(common))
    notes = []
    if curves and len(curves) < len(group.runs):
        missing = len(group.runs) - len(curves)
        notes.append(f"{missing} of its {len(group.runs)} runs recorded no {metric} curve")
    dropped = len(set().union(*curves)) - len(common) if curves else 0
    if curves and not common:
        notes.append(f"its {len(curves)} curves share no step: not drawn")
    elif dropped:
        notes.append(f"{dropped} step(s) not scored by all its {len(curves)} curves left out")
    return GroupCurve(
        group,
        np.array(common, dtype=int),
        values.mean(axis=0) if common else np.array([]),
        values.min(axis=0) if common else np.array([]),
        values.max(axis=0) if common else np.array([]),
        len(curves),
        f"{group.label}: {'; '.join(notes)}" if notes else None,
    )


def curve_metrics(section: Section) -> list[str]:
    """The metrics to draw a learning curve of: the section's metrics (its main one first) that its runs'
    curves hold, else every metric they hold; [] for a section whose runs recorded no curve."""
    held = {m for g in section.groups for r in g.runs for p in run_curve(r).values() for m in p}
    order = [*FIDELITY_METRICS, *sorted(held)]
    asked = [m for m in section.metrics if m in held]
    chosen = asked or sorted(held, key=order.index)
    return [m for m in chosen if any(group_curve(g, m).steps.size for g in section.groups)]


def scored_on(section: Section) -> str:
    """Which rows the section's curves were scored on: "the first 100 rows of dolly" (the first eval set
    of each run, up to train.curve_rows rows), every distinct value joined."""
    found = []
    for run in (r for g in section.groups for r in g.runs if run_curve(r)):
        rows = run.record.config.get("train", {}).get("curve_rows")
        n_eval = run.record.data.get("n_eval")
        if isinstance(rows, int) and isinstance(n_eval, int):
            rows = min(rows, n_eval)
        found.append(f"the first {rows} rows of {next(iter(run.record.metrics), '?')}")
    return " or ".join(dict.fromkeys(found))
