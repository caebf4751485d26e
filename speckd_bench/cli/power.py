"""`power`: the training seeds a family of comparisons needs (leaderboard/power.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speckd_bench.cli.options import sweep_run_ids
from speckd_bench.errors import UserError
from speckd_bench.progress import say, warn


def power(
    effect: Annotated[float, typer.Option(help="The difference to detect, in the metric's units (> 0).")],
    results_dir: Annotated[Path, typer.Option(help="Folder holding runs/.")] = Path("results"),
    sweep: Annotated[Path | None, typer.Option(help="Only the runs of this sweep file.")] = None,
    baseline: Annotated[str, typer.Option(help="The method every other is compared with.")] = "fkl",
    metric: Annotated[str | None, typer.Option(help="Metric (default: the records' main metric).")] = None,
    target: Annotated[float, typer.Option(min=0.0, max=1.0, help="The power to reach.")] = 0.8,
    gates: Annotated[
        bool,
        typer.Option(
            "--gates",
            help="Compare each gate rule of --method with its random and teacher-confidence control gates "
            "(the gate question's family) instead of every method with the baseline.",
        ),
    ] = False,
    method: Annotated[str, typer.Option(help="The gated method whose rules --gates compares.")] = "speckd",
) -> None:
    """Paired per-seed differences in one family of comparisons, the power they give now and the seeds they
    need: every method against the baseline, or (--gates) each SpecKD rule against its control gates."""
    from speckd_bench.leaderboard.power import baseline_pairs, format_power, gate_pairs, pair_rows
    from speckd_bench.leaderboard.selection import select_sections

    if not effect > 0:
        raise UserError(f"--effect {effect:g}: give the difference to detect, a number > 0")
    run_ids = sweep_run_ids(sweep, results_dir)
    metrics = [metric] if metric else None
    sections = select_sections(results_dir, baseline=baseline, metrics=metrics, run_ids=run_ids)
    if not sections:
        raise UserError(f"no complete run records under {results_dir}/runs")
    for section in sections:
        name = metric or section.metrics[0]
        pairs = gate_pairs(section, method) if gates else baseline_pairs(section, baseline)
        if not pairs:
            missing = f"{method} runs with control gates" if gates else f"{baseline} runs"
            warn(f"{section.eval_set}: no {missing} under this protocol, nothing to compare")
            continue
        table = format_power(pair_rows(pairs, name, effect, target), name, effect, target)
        say(f"## {section.eval_set}: {section.description}\n\n{table}\n")
