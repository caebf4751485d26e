"""Where each point of a sweep stands in a results directory: done, running, interrupted, failed or missing.

A point is done when a complete record with its resolved config is there; running while a sweep holds its
lock; failed when the sweep's last attempt at it exited with an error; interrupted when a run folder with
its config has no complete record (stopped by Ctrl-C or killed: `run --resume` continues it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from speckd_bench.caches import atomic_write_json
from speckd_bench.errors import EXIT_INTERRUPTED
from speckd_bench.records.store import load_records
from speckd_bench.sweep.grid import STATUSES, Point, config_keys, load_points


@dataclass(frozen=True)
class SeenRun:
    """A run folder under RESULTS_DIR/runs, as far as the sweep cares."""

    run_id: str
    complete: bool
    digest: str
    group: str
    note: str = ""
    """e.g. 'diverged at step 5' (a complete record of a run whose loss became non-finite)."""


@dataclass(frozen=True)
class PointStatus:
    point: Point
    status: str
    run_id: str | None = None
    """The complete run (done), or the unfinished one that a resume continues."""
    error: str = ""
    steps: int | None = None
    """Training steps logged by the unfinished run."""


def scan_runs(results_dir: Path) -> list[SeenRun]:
    """Every run folder with its result-config digest: the one place this module reads run records.
    Complete records first come in run-id order (the one `run --skip-done` finds first), then folders
    without a complete record, read from their config.json."""
    seen = []
    for record in load_records(results_dir).records:
        diverged = record.training.get("diverged_at_step")
        note = f"diverged at step {diverged}" if diverged is not None else ""
        seen.append(SeenRun(str(record.run_id), True, *config_keys(record.config), note))
    complete = {s.run_id for s in seen}
    for path in sorted((results_dir / "runs").glob("*/config.json")):
        if path.parent.name not in complete:
            try:
                config = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            seen.append(SeenRun(path.parent.name, False, *config_keys(config)))
    return seen


def sweep_dir(results_dir: Path, name: str) -> Path:
    """The sweep's own files: per-point attempt state and logs (and submitit's folder)."""
    return results_dir / "sweeps" / name


def locks_dir(results_dir: Path) -> Path:
    """The lock files shared by every sweep writing into results_dir."""
    return results_dir / "sweeps" / ".locks"


def lock_path(results_dir: Path, kind: str, key: str) -> Path:
    """kind 'run': held while a point runs; 'group': while a cache group's caches are built."""
    return locks_dir(results_dir) / f"{kind}-{key}.lock"


def state_path(results_dir: Path, name: str, point: Point) -> Path:
    return sweep_dir(results_dir, name) / "points" / f"{point.digest}.json"


def log_path(results_dir: Path, name: str, point: Point) -> Path:
    return sweep_dir(results_dir, name) / "logs" / f"{point.digest}.log"


def read_state(results_dir: Path, name: str, point: Point) -> dict[str, Any]:
    path = state_path(results_dir, name, point)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(results_dir: Path, name: str, point: Point, state: dict[str, Any]) -> None:
    atomic_write_json(state_path(results_dir, name, point), {"label": point.label, **state})


def is_running(results_dir: Path, point: Point) -> bool:
    """Whether a sweep (this one or another, on any machine sharing results_dir) holds the point's lock;
    writes nothing where no sweep ever ran it (plan and report may read a read-only directory)."""
    path = lock_path(results_dir, "run", point.digest)
    if not path.is_file():
        return False
    try:
        with FileLock(path, timeout=0):
            return False
    except Timeout:
        return True


def _steps(results_dir: Path, run_id: str) -> int | None:
    log = results_dir / "runs" / run_id / "train_log.jsonl"
    return log.read_text().count("\n") if log.is_file() else None


def classify(
    point: Point, runs: list[SeenRun], state: dict[str, Any], running: bool, results_dir: Path
) -> PointStatus:
    """The status of one point given the run folders, the sweep's last attempt at it and its lock."""
    mine = [r for r in runs if r.digest == point.digest]
    done = next((r for r in mine if r.complete), None)
    if done is not None:
        return PointStatus(point, "done", done.run_id, done.note)
    unfinished = max((r.run_id for r in mine), default=None)
    steps = _steps(results_dir, unfinished) if unfinished else None
    if running:
        return PointStatus(point, "running", unfinished, steps=steps)
    if state.get("exit_code") not in (None, 0, EXIT_INTERRUPTED):
        return PointStatus(point, "failed", unfinished, state.get("error", ""), steps)
    if unfinished is not None:
        return PointStatus(point, "interrupted", unfinished, steps=steps)
    return PointStatus(point, "missing")


def point_status(results_dir: Path, name: str, point: Point) -> PointStatus:
    """One point's status now (a fresh look at the results directory)."""
    state = read_state(results_dir, name, point)
    return classify(point, scan_runs(results_dir), state, False, results_dir)


def statuses(results_dir: Path, name: str, points: list[Point]) -> list[PointStatus]:
    """Every point's status, reading the results directory once."""
    runs = scan_runs(results_dir)
    return [
        classify(p, runs, read_state(results_dir, name, p), is_running(results_dir, p), results_dir)
        for p in points
    ]


def totals(rows: list[PointStatus]) -> dict[str, int]:
    return {s: sum(r.status == s for r in rows) for s in STATUSES}


def group_warm(results_dir: Path, group: str) -> bool:
    """Whether a complete run of this cache group exists: its shared caches are built."""
    return any(r.complete and r.group == group for r in scan_runs(results_dir))


def done_run_ids(file: Path, results_dir: Path) -> tuple[set[str], str | None]:
    """The complete runs of a sweep's points in results_dir (what `report --sweep` reports), and a note
    saying how many of its runs are not done (None when all are)."""
    sweep, where, points = load_points(file, results_dir)
    rows = statuses(where, sweep.name, points)
    missing = [r for r in rows if r.status != "done"]
    note = (
        f"note: {len(missing)} of {len(rows)} runs of sweep {sweep.name} are not done "
        f"(speckd-bench sweep status {file})"
    )
    return {r.run_id for r in rows if r.status == "done" and r.run_id}, note if missing else None
