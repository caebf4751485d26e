"""The records of a results folder: which are complete, and the run that already holds a given config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speckd_bench.config.result_keys import result_config
from speckd_bench.records.run_record import INTERRUPTED, RECORD_FILE, RecordError, RunRecord


@dataclass
class LoadedRecords:
    records: list[RunRecord]
    skipped: list[tuple[str, str]]
    """(path, reason) of records that could not be used."""


def load_records(results_dir: Path, include_interrupted: bool = False) -> LoadedRecords:
    """Every complete record under results_dir/runs (and the interrupted ones when asked); run folders
    without a usable record are listed as skipped, with the reason.

    A record is complete only when the run's final write of it succeeded with status "complete"; a run
    stopped by Ctrl-C leaves status "interrupted", a killed one no record at all.
    """
    records, skipped = [], []
    runs = results_dir / "runs"
    run_dirs = (
        sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith("."))
        if runs.is_dir()
        else []
    )
    for run_dir in run_dirs:
        path = run_dir / RECORD_FILE
        if not path.is_file():
            hint = f"resume it with: speckd-bench run --resume {run_dir.name}"
            skipped.append((str(run_dir), f"no record.json: still running, or killed ({hint})"))
            continue
        try:
            record = RunRecord.read(path)
        except RecordError as exc:
            skipped.append((str(path), str(exc)))
            continue
        if record.status == INTERRUPTED and not include_interrupted:
            skipped.append((str(path), "status interrupted (shown with --include-interrupted)"))
        else:
            records.append(record)
    return LoadedRecords(records, skipped)


def find_complete(results_dir: Path, cfg: Any) -> Path | None:
    """The record of a complete run under results_dir whose config equals cfg's in every result key."""
    wanted = result_config(cfg.to_dict())
    for record in load_records(results_dir).records:
        if record.complete and result_config(record.config) == wanted:
            return results_dir / "runs" / str(record.run_id) / RECORD_FILE
    return None
