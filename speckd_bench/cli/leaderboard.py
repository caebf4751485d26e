"""`table`, `plot` and `report`: the leaderboard of the runs under a results folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from speckd_bench.cli.options import sweep_run_ids
from speckd_bench.errors import UserError
from speckd_bench.progress import console

ResultsDirOpt = Annotated[Path, typer.Option(help="Directory holding runs/*/record.json.")]
TaskOpt = Annotated[list[str] | None, typer.Option(help="Only this training task or eval set (repeatable).")]
MethodOpt = Annotated[list[str] | None, typer.Option(help="Only this method (repeatable).")]
TeacherOpt = Annotated[list[str] | None, typer.Option(help="Only this teacher (repeatable).")]
StudentOpt = Annotated[list[str] | None, typer.Option(help="Only this student (repeatable).")]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Only runs created on or after this date (YYYY-MM-DD[THH:MM], UTC without a zone)."),
]
BASELINE_HELP = (
    "each method's Δ of the mean to it, with a seed-level t-interval over training seeds (paired when "
    "both ran the same seeds, else Welch) and Holm correction across the section's methods, † where "
    "significant; the prompt bootstrap CI (--columns intervals) is context only and never marks "
    "significance."
)


@contextmanager
def _writing(hint: str) -> Iterator[None]:
    """Outputs that cannot be written (a read-only folder, a full disk) fail as one line with a hint."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or 'the output'}: {exc.strerror}; {hint}") from None


def table(
    results_dir: ResultsDirOpt = Path("results"),
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="rich (a terminal table; unwrapped when piped) | md | csv | latex (the compact table, then "
            "one per --columns group) | html | json; csv and json hold every column.",
        ),
    ] = "rich",
    baseline: Annotated[str | None, typer.Option(help=f"Method to compare with: {BASELINE_HELP}")] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Metric column(s), repeatable: the first is the main one (core table, --sort metric and "
            "delta), the others join the fidelity or text group (default: the task's main)."
        ),
    ] = None,
    task: TaskOpt = None,
    method: MethodOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    since: SinceOpt = None,
    sort: Annotated[
        str,
        typer.Option(
            help="Order of the method rows, best first by the column's direction (ascending without one): "
            "metric | delta (of the main metric) | method | spikes | grad_cv | diverged | tok_s | wall."
        ),
    ] = "metric",
    include_interrupted: Annotated[
        bool,
        typer.Option(
            "--include-interrupted",
            help="Also tabulate runs stopped by Ctrl-C, as rows of their own (else skipped).",
        ),
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            help="Column groups beside the core ones, comma-separated: fidelity, text, intervals, "
            "degeneracy, stability, timing, lm-eval (CSV and JSON always hold every column).",
        ),
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column group.")] = False,
) -> None:
    """Leaderboard: mean ± std over training seeds per group of runs, Δ to a baseline, stability, cost."""
    from speckd_bench.leaderboard.columns import parse_groups
    from speckd_bench.leaderboard.render import print_rich
    from speckd_bench.leaderboard.report import check_format, render
    from speckd_bench.leaderboard.selection import select_sections

    check_format(format)
    groups = parse_groups(columns, wide)
    sections = select_sections(
        results_dir,
        tasks=task,
        methods=method,
        teachers=teacher,
        students=student,
        since=since,
        metrics=metric,
        baseline=baseline,
        sort=sort,
        include_interrupted=include_interrupted,
    )
    rendered = render(sections, format, groups)
    if isinstance(rendered, str):
        sys.stdout.write(rendered)
    else:
        print_rich(rendered, console)


def plot(
    results_dir: ResultsDirOpt = Path("results"),
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where the PNGs go (default: RESULTS_DIR/plots).")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric bar chart(s) (default: the task's main).")
    ] = None,
    task: TaskOpt = None,
    method: MethodOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    since: SinceOpt = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Method to compare with: adds a forest plot of each method's Δ to it."),
    ] = None,
    curves: Annotated[
        bool,
        typer.Option(
            "--curves/--no-curves",
            help="Learning curves (train.curve_every) per --metric the runs' curves hold, else every one "
            "they hold; sections without curves get none.",
        ),
    ] = True,
) -> None:
    """PNG plots: loss, grad-norm and TAR curves per method (band over seeds), learning curves where runs
    recorded them, metric bars with error bars, and with --baseline a forest plot of the Δ to it
    (Holm-adjusted t-intervals over training seeds)."""
    from speckd_bench.leaderboard.selection import select_sections
    from speckd_bench.publish.plots import write_plots

    sections = select_sections(
        results_dir,
        tasks=task,
        methods=method,
        teachers=teacher,
        students=student,
        since=since,
        metrics=metric,
        baseline=baseline,
    )
    with _writing("pass --out DIR"):
        for path in write_plots(sections, out_dir or results_dir / "plots", curves=curves):
            print(path)


def report(
    results_dir: ResultsDirOpt = Path("results"),
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="README to write (default: RESULTS_DIR/README.md; the plots go to RESULTS_DIR/plots).",
        ),
    ] = None,
    baseline: Annotated[
        str, typer.Option(help=f"Method every method row is compared with: {BASELINE_HELP}")
    ] = "fkl",
    method: Annotated[
        str,
        typer.Option(
            help="Method whose difference to the baseline the README states in words (and the findings)."
        ),
    ] = "speckd",
    task: TaskOpt = None,
    command: Annotated[
        str | None, typer.Option(help="The command that produced the runs, quoted in the README.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Metric column(s), the first one judged and sorted by (default: the task's main)."),
    ] = None,
    notes: Annotated[
        Path | None,
        typer.Option(help="Markdown file with the reading of the results, placed under the README's title."),
    ] = None,
    sweep: Annotated[
        Path | None,
        typer.Option(
            help="Report only the complete runs of this sweep file's points, with a note of how many are "
            "not done (docs/sweeps.md)."
        ),
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write this self-contained HTML page instead of the README (sortable tables, plots inline).",
        ),
    ] = None,
) -> None:
    """Write RESULTS_DIR/README.md (compact table, a detail table per column group, plots, command,
    machine, sizes, wall time, significance)."""
    from speckd_bench.leaderboard.selection import select_sections
    from speckd_bench.publish.html_page import write_page
    from speckd_bench.publish.results_readme import write_results_readme

    if notes is not None and not notes.is_file():
        raise UserError(f"--notes {notes}: no such file")
    run_ids = sweep_run_ids(sweep, results_dir)
    sections = select_sections(results_dir, tasks=task, baseline=baseline, metrics=metric, run_ids=run_ids)
    if not sections:
        raise UserError(f"no complete run records under {results_dir}/runs to report on")
    reading = _read_notes(notes) if notes else None
    with _writing("pass --out FILE (or --html FILE) in a writable folder"):
        if html_file is not None:
            print(write_page(sections, html_file, baseline=baseline, method=method, command=command))
            return
        written = write_results_readme(
            sections,
            results_dir,
            out_file or results_dir / "README.md",
            baseline=baseline,
            method=method,
            command=command,
            notes=reading,
        )
    for path in written:
        print(path)


def _read_notes(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--notes {path}: cannot read it ({exc}); pass a UTF-8 markdown file") from None
