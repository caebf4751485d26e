"""The leaderboard's way in: which run records it can use, which the filters keep, the settings that
group them, and the sections built from them (`build_sections`, each method row with its runs' lm-eval
scores). The sections, rows, columns and formats live in their own modules; `render` and the names the
command line uses stay importable from here.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speckd_bench.config.result_keys import result_config
from speckd_bench.config.run_config import flatten
from speckd_bench.errors import UserError
from speckd_bench.leaderboard.render import check_format, render, section_lines
from speckd_bench.leaderboard.rows import lm_eval_summaries
from speckd_bench.leaderboard.runs import Run, created_at, is_number
from speckd_bench.leaderboard.sections import DESCRIBED_KEYS, Section, check_sort, init_key, sections_of
from speckd_bench.records.run_record import RunRecord

__all__ = [
    "Filters",
    "build_sections",
    "check_format",
    "parse_since",
    "render",
    "section_lines",
    "usable_records",
]


def task_digests(record: RunRecord, eval_set: str) -> dict[str, str] | None:
    """Digests of the task files (YAML, hook, metrics) a record's eval set and training task were
    scored with; None for records older than task provenance."""
    sources = record.data.get("task_sources")
    if not isinstance(sources, dict):
        return None
    names = dict.fromkeys([record.task, eval_set])
    return {n: s.get("digest") if isinstance(s := sources.get(n), dict) else None for n in names}


def _settings(record: RunRecord, eval_set: str) -> dict[str, str]:
    """What must be equal for two records to be averaged over training seeds: the result-changing
    settings but the seed, the warm start, the task files, the status and the process count."""
    flat = result_config(record.config, with_seed=False)
    flat["init"] = init_key(record)
    flat["task_digest"] = task_digests(record, eval_set)  # a changed task file is another protocol
    if not record.complete:  # interrupted runs (--include-interrupted) form their own rows
        flat["status"] = record.status
    if record.num_processes != 1:  # train.batch_size is per process: N processes are a protocol
        flat["num_processes"] = record.num_processes
    return {k: json.dumps(v) for k, v in flat.items()}


_NUMBER_MAPS = ("metrics", "std_over_eval_seeds", "degeneracy")
"""Keys of a record's per-set summaries whose values map names to numbers."""
_OBJECTS = ("after", "before", "reference", "raw", "init", "teacher", "floors", "per_seed")
"""Keys of a record's per-set summaries that hold an object where present."""
_CONFIG_KEYS = (
    *sorted(DESCRIBED_KEYS),
    *(f"eval.{k}" for k in ("temperature", "top_p", "top_k", "no_repeat_ngram_size")),
    *(f"data.max_{k}_examples" for k in ("train", "eval")),
)


def _summary_problem(value: Any, where: str) -> str | None:
    """What makes a per-set block of a record unusable (a name that should be an object and is not, a
    metric value that is not a number), or None."""
    if not isinstance(value, dict):
        return f"{where} is {json.dumps(value)[:30]}, expected an object"
    for key, sub in value.items():
        at = f"{where}.{key}"
        if key in _NUMBER_MAPS and sub is not None:
            if not isinstance(sub, dict):
                return f"{at} is {json.dumps(sub)[:30]}, expected an object of numbers"
            bad = next((k for k, v in sub.items() if v is not None and not is_number(v)), None)
            if bad is not None:
                return f"{at}.{bad} is {json.dumps(sub[bad])[:30]}, not a number"
        elif key in _OBJECTS or isinstance(sub, dict):
            problem = None if sub is None else _summary_problem(sub, at)
            if problem or (key == "floors" and sub and not all(isinstance(f, dict) for f in sub.values())):
                return problem or f"{at} holds a floor that is not an object"
    return None


_SCALARS = {"str": str, "int": int}
"""Types of the record's scalar fields by the name their annotation gives them."""


def _scalar_problem(record: RunRecord) -> str | None:
    """The first scalar field of a record (seed, method, created, ...) whose value is not of its declared
    type, or None; RunRecord.from_json checks only the containers."""
    for f in dataclasses.fields(record):
        names = str(f.type).split(" | ")
        expected = _SCALARS.get(names[0])
        value = getattr(record, f.name)
        if expected is None or (value is None and "None" in names):
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            return f"field {f.name} is {json.dumps(value)[:30]}, expected {names[0]}"
    return None


def record_problem(record: RunRecord) -> str | None:
    """Why a record cannot be tabulated (a scalar field of the wrong type, a creation time that is no
    date, no eval set, a malformed metric, a config without the protocol keys), or None."""
    problem = _scalar_problem(record)
    if problem:
        return problem
    try:
        created_at(record)
    except ValueError:
        return f"field created is {json.dumps(record.created)[:30]}, not an ISO date"
    if not record.metrics:
        return "its metrics hold no eval set"
    config = flatten(record.config)
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        return f"its config lacks {', '.join(missing)}"
    if not all(isinstance(config[f"model.{k}"], str) for k in ("teacher", "student")):
        return "its config.model names no teacher or student"
    for eval_set, block in record.metrics.items():
        problem = _summary_problem(block, f"metrics.{eval_set}")
        if problem:
            return problem
    return None


def usable_records(
    records: list[RunRecord], results_dir: Path
) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The records a leaderboard can use, and (record path, reason) of those it leaves out."""
    kept, skipped = [], []
    for record in records:
        problem = record_problem(record)
        if problem is None:
            kept.append(record)
        else:
            skipped.append((str(results_dir / "runs" / str(record.run_id) / "record.json"), problem))
    return kept, skipped


@dataclass
class Filters:
    tasks: list[str] = field(default_factory=list)
    """Training task or eval set names."""
    methods: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    since: datetime | None = None

    def keep_record(self, record: RunRecord) -> bool:
        model = record.config["model"]
        if self.teachers and model["teacher"] not in self.teachers:
            return False
        if self.students and model["student"] not in self.students:
            return False
        return self.since is None or created_at(record) >= self.since

    def keep_set(self, record: RunRecord, eval_set: str) -> bool:
        return not self.tasks or record.task in self.tasks or eval_set in self.tasks


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; a value without a timezone is read as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def build_sections(
    records: list[RunRecord],
    results_dir: Path,
    *,
    filters: Filters | None = None,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    sort: str = "metric",
) -> list[Section]:
    """Group, aggregate, compare and sort; method filters apply after the baseline is found."""
    filters = filters or Filters()
    check_sort(sort)
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for record in records:
        if not filters.keep_record(record):
            continue
        for eval_set in record.metrics:
            if filters.keep_set(record, eval_set):
                run = Run(record, results_dir / "runs" / str(record.run_id))
                groups[(eval_set, json.dumps(_settings(record, eval_set), sort_keys=True))].append(run)
    sections = sections_of(groups, metrics=metrics, baseline=baseline, methods=filters.methods, sort=sort)
    for group in (g for s in sections for g in s.groups):
        group.row.lm_eval = lm_eval_summaries([run.record.lm_eval for run in group.runs])
    return sections
