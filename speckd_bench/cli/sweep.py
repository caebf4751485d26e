"""`speckd-bench sweep plan|run|status FILE`: a grid of runs from one YAML file (docs/sweeps.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table

from speckd_bench.errors import RunInterrupted, UserError
from speckd_bench.progress import console, log, say

if TYPE_CHECKING:
    from speckd_bench.sweep.executors import Outcome
    from speckd_bench.sweep.status import PointStatus

sweep_app = typer.Typer(
    help="Sweeps: expand a grid of runs from a YAML file, run what is not done, watch where it stands.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="The sweep file (YAML).")]
ResultsOpt = Annotated[
    Path | None,
    typer.Option(help="Where run records go (default: the file's results_dir, else results)."),
]
STYLE = {"done": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "missing": "dim"}
ACTION = {"done": "skip", "running": "wait", "interrupted": "resume", "failed": "retry", "missing": "run"}


class _Unwrapped:
    """A table laid out as without soft wrap (its title and caption centred over it), also on the shared
    console and in a Live display, which print with soft wrap."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, rich_console: Console, options: ConsoleOptions) -> RenderResult:
        yield from rich_console.render(self.table, options.update(no_wrap=None, overflow=None))


def _table(title: str, rows: list[PointStatus], steps: bool) -> _Unwrapped:
    from speckd_bench.sweep.status import totals

    table = Table(title=title, caption=", ".join(f"{n} {s}" for s, n in totals(rows).items() if n))
    for column in ("#", "run", "digest", "status", "run id", *(["steps"] if steps else []), "error"):
        table.add_column(column, overflow="fold")
    for i, row in enumerate(rows, 1):
        status = f"[{STYLE[row.status]}]{row.status}[/]"
        progress = ["" if row.steps is None else str(row.steps)] if steps else []
        table.add_row(
            str(i), row.point.label, row.point.digest, status, row.run_id or "", *progress, row.error
        )
    return _Unwrapped(table)


@sweep_app.command("plan")
def plan(
    file: FileArg,
    results_dir: ResultsOpt = None,
    format: Annotated[Literal["rich", "json"], typer.Option("--format", help="Output format.")] = "rich",
) -> None:
    """The expanded grid: every run with its resolved-config digest and its status in the results dir."""
    from speckd_bench.sweep.grid import load_points
    from speckd_bench.sweep.status import statuses, totals

    sweep, where, points = load_points(file, results_dir)
    rows = statuses(where, sweep.name, points)
    if format == "json":
        runs = [
            {
                "run": r.point.label,
                "coords": r.point.coords,
                "settings": r.point.settings,
                "digest": r.point.digest,
                "group": r.point.group,
                "status": r.status,
                "action": ACTION[r.status],
                "run_id": r.run_id,
                "error": r.error,
            }
            for r in rows
        ]
        doc = {"sweep": sweep.name, "results_dir": str(where), "runs": runs, "totals": totals(rows)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    console.print(_table(f"sweep {sweep.name} in {where}", rows, steps=False))


@sweep_app.command("status")
def status(
    file: FileArg,
    results_dir: ResultsOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until every run is done or failed.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes (--watch).")] = 5.0,
) -> None:
    """Where every run of the sweep stands: a table, once or live (--watch)."""
    from speckd_bench.sweep.grid import load_points
    from speckd_bench.sweep.status import statuses

    sweep, where, points = load_points(file, results_dir)

    def table() -> tuple[_Unwrapped, bool]:
        rows = statuses(where, sweep.name, points)
        finished = all(r.status in ("done", "failed") for r in rows)
        return _table(f"sweep {sweep.name} in {where}", rows, steps=True), finished

    current, finished = table()
    if not watch:
        console.print(current)
        return
    with Live(current, console=console, auto_refresh=False) as live:
        while not finished:
            time.sleep(interval)
            current, finished = table()
            live.update(current, refresh=True)


def _report(outcome: Outcome) -> None:
    took = f" in {outcome.seconds:.0f} s" if outcome.seconds else ""
    run = f" ({outcome.run_id})" if outcome.run_id else ""
    error = f": {outcome.error}" if outcome.error else ""
    log(f"{outcome.result}: {outcome.label}{run}{took}{error}")


@sweep_app.command("run")
def run(
    file: FileArg,
    results_dir: ResultsOpt = None,
    executor: Annotated[Literal["local", "submitit"], typer.Option(help="Where the runs run.")] = "local",
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="local: runs at once (default 1 on CPU, one per GPU, each pinned)."),
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="Attempts after a failed one, per run.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would run; run nothing.")] = False,
    backend: Annotated[
        Literal["slurm", "local"] | None, typer.Option(help="submitit: slurm (default) or local.")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="submitit: SLURM partition.")] = None,
    timeout_min: Annotated[int | None, typer.Option(help="submitit: time limit per job (min).")] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="submitit: GPUs per run.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="submitit: CPUs per run.")] = None,
    mem_gb: Annotated[float | None, typer.Option(help="submitit: memory per run (GB).")] = None,
    array_parallelism: Annotated[
        int | None, typer.Option(help="submitit: jobs of the array running at once.")
    ] = None,
) -> None:
    """Run every run of the sweep that is not done: resume interrupted ones, retry failed ones."""
    from speckd_bench.sweep.executors import (
        PointJob,
        cluster_options,
        command,
        default_workers,
        run_local,
        run_submitit,
    )
    from speckd_bench.sweep.status import statuses, sweep_dir

    flags = {
        "backend": backend,
        "partition": partition,
        "timeout_min": timeout_min,
        "gpus_per_task": gpus_per_task,
        "cpus_per_task": cpus_per_task,
        "mem_gb": mem_gb,
        "array_parallelism": array_parallelism,
    }
    if executor == "local" and any(v is not None for v in flags.values()):
        raise UserError("cluster options (--partition, --timeout-min, ...) need --executor submitit")
    if executor == "submitit" and workers is not None:
        raise UserError("--workers applies to --executor local; submitit runs take --array-parallelism")
    from speckd_bench.sweep.grid import load_points

    sweep, where, points = load_points(file, results_dir)
    options = cluster_options(sweep.cluster, flags, str(file)) if executor == "submitit" else {}
    rows = statuses(where, sweep.name, points)
    todo = [r for r in rows if r.status != "done"]
    if not todo:
        say(f"nothing to run: all {len(rows)} runs of sweep {sweep.name} are done in {where}")
        return
    say(f"sweep {sweep.name}: {len(rows) - len(todo)} of {len(rows)} runs done in {where}; {len(todo)} to go")
    if dry_run:
        for r in todo:
            resume = r.run_id if r.status in ("interrupted", "failed") else None
            cmd = command(r.point, where, resume, sweep.num_processes)
            say(f"{ACTION[r.status]}: {r.point.label}: speckd-bench {' '.join(cmd[3:])}")
        return
    jobs = [PointJob(r.point, sweep.name, where, retries, sweep.num_processes) for r in todo]
    warm = {r.point.group for r in rows if r.status == "done"}
    if executor == "local":
        outcomes = run_local(jobs, warm, workers or default_workers(sweep.num_processes), _report)
    else:
        folder = sweep_dir(where, sweep.name) / "submitit"
        outcomes = run_submitit(jobs, warm, folder, options, _report)
    failed = [o for o in outcomes if o.result == "failed"]
    stopped = [o for o in outcomes if o.result == "interrupted"]
    ran = sum(o.result == "done" for o in outcomes)
    say(f"sweep {sweep.name}: {ran} run, {len(failed)} failed, {len(stopped)} interrupted")
    if failed:
        logs = sweep_dir(where, sweep.name) / "logs"
        say(f"failed runs' output: {logs}; `speckd-bench sweep run {file}` retries them")
        raise typer.Exit(1)
    if stopped:
        raise RunInterrupted(
            f"{len(stopped)} runs stopped; continue them with: speckd-bench sweep run {file}"
        )
