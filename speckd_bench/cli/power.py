"""`power`: the training seeds a comparison with the baseline needs (leaderboard/power.py)."""

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
) -> None:
    """Paired per-seed differences from the baseline, the power they give now and the seeds they need."""
    from speckd_bench.leaderboard.power import format_power, power_rows
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
        rows = power_rows(section, name, baseline, effect, target)
        if not rows:
            warn(f"{section.eval_set}: no {baseline} runs under this protocol, nothing to compare")
            continue
        table = format_power(rows, name, baseline, effect, target)
        say(f"## {section.eval_set}: {section.description}\n\n{table}\n")
