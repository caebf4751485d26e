"""Which runs a leaderboard shows: the records under a results folder, filtered by the options of `table`,
`plot` and `report`, built into sections. Skipped records and the sections' notes are listed on stderr."""

from __future__ import annotations

from pathlib import Path

from speckd_bench.errors import UserError
from speckd_bench.leaderboard.report import Filters, Section, build_sections, parse_since, usable_records
from speckd_bench.progress import warn
from speckd_bench.records.store import load_records


def select_sections(
    results_dir: Path,
    *,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    teachers: list[str] | None = None,
    students: list[str] | None = None,
    since: str | None = None,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    sort: str = "metric",
    include_interrupted: bool = False,
    run_ids: set[str] | None = None,
) -> list[Section]:
    """The leaderboard sections of the usable records in `results_dir` that pass the filters (`since`:
    YYYY-MM-DD[THH:MM]; `run_ids`: only these runs)."""
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; pass --results-dir DIR")
    filters = Filters(
        tasks=tasks or [],
        methods=methods or [],
        teachers=teachers or [],
        students=students or [],
        since=parse_since(since) if since else None,
    )
    loaded = load_records(results_dir, include_interrupted=include_interrupted)
    records, unusable = usable_records(loaded.records, results_dir)
    for path, reason in [*loaded.skipped, *unusable]:
        warn(f"skipped {path}: {reason}")
    if not records:
        warn(f"no complete run records under {results_dir}/runs")
    records = [r for r in records if run_ids is None or r.run_id in run_ids]
    sections = build_sections(
        records, results_dir, filters=filters, metrics=metrics, baseline=baseline, sort=sort
    )
    for note in dict.fromkeys(note for section in sections for note in section.notes):
        warn(f"note: {note}")
    return sections
