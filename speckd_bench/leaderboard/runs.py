"""One run of the leaderboard: its record, with its training log and per-prompt scores read on demand."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from speckd_bench.jsonl import read_jsonl
from speckd_bench.leaderboard.stats import coefficient_of_variation
from speckd_bench.records.run_record import RunRecord


def is_number(value: Any) -> bool:
    """An int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A number that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def created_at(record: RunRecord) -> datetime:
    """When a record was written (a time without a timezone read as UTC; the epoch for none); ValueError
    for a value that is no ISO date."""
    when = datetime.fromisoformat(record.created or "1970-01-01")
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass
class Run:
    """One record, read on demand together with its training log and samples."""

    record: RunRecord
    dir: Path
    problems: list[str] = field(default_factory=list)
    """Lines or files of the run left out while reading it (shown as notes)."""

    def read_rows(self, path: Path) -> list[dict[str, Any]]:
        """The JSON objects of one of the run's JSONL files (training log, samples); unreadable lines and
        files are left out and noted in `problems`."""
        bad: list[int] = []
        try:
            rows = read_jsonl(path, appended=True, skipped=bad)
        except OSError as exc:
            self.problems.append(f"{path}: unreadable ({exc.strerror}); left out")
            return []
        if bad:
            self.problems.append(
                f"{path}: {len(bad)} line(s) not a JSON object (first: line {bad[0]}); left out"
            )
        return rows

    @property
    def seed(self) -> int:
        return int(self.record.seed or 0)

    @cached_property
    def log(self) -> list[dict[str, Any]]:
        path = self.dir / self.record.paths.get("train_log", "train_log.jsonl")
        return self.read_rows(path) if path.is_file() else []

    @cached_property
    def grad_norm_cv(self) -> float | None:
        """The coefficient of variation of the gradient norm over the run's logged steps."""
        return coefficient_of_variation([row.get("grad_norm") for row in self.log])

    def samples_file(self, eval_set: str) -> Path:
        entry = self.record.paths.get("samples", "samples.jsonl")
        return self.dir / (entry.get(eval_set, "") if isinstance(entry, dict) else entry)

    def after(self, eval_set: str) -> dict[str, Any]:
        """The run's summary of eval_set after training."""
        return self.record.metrics[eval_set].get("after", {})

    def after_metric(self, eval_set: str, metric: str) -> float | None:
        return self.after(eval_set).get("metrics", {}).get(metric)

    def prompt_scores(self, eval_set: str, metric: str) -> dict[int, float] | None:
        """Per-example score of `metric` on eval_set, averaged over eval seeds; None when not stored.

        Samples carry `index`, `eval_seed`, `scores`; an `eval_set` field, where present, selects the set
        (samples without one belong to the run's own task)."""
        path = self.samples_file(eval_set)
        if not path.is_file():
            return None
        per_index: dict[int, list[float]] = defaultdict(list)
        for sample in self.read_rows(path):
            if sample.get("eval_set", self.record.task) != eval_set:
                continue
            scores, index = sample.get("scores"), sample.get("index")
            value = scores.get(metric) if isinstance(scores, dict) else None
            if not is_number(value) or not isinstance(index, int):
                return None
            per_index[index].append(value)
        means = {i: float(np.mean(v)) for i, v in per_index.items()}
        return {i: m for i, m in means.items() if math.isfinite(m)} or None


def values_at(runs: list[Run], path: str) -> list[float]:
    """The finite numbers at a dotted path of each run's record (e.g. training.final_loss), where present."""
    out = []
    section, _, rest = path.partition(".")
    for run in runs:
        value: Any = getattr(run.record, section)
        for part in rest.split(".") if rest else []:
            value = value.get(part) if isinstance(value, dict) else None
        if is_finite(value):
            out.append(float(value))
    return out
