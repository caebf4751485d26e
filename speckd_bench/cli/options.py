"""Options shared by several command groups, and the parsing of the values that need more than typer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PluginsOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugins", help="Directory of task YAML / method .py plugins (repeatable)."),
]
MirrorOpt = Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")]

NO_TRACKER, EVERY_TRACKER = "none", "all"


def _complete_trackers(incomplete: str) -> list[str]:
    """Shell completion of --report-to: the last comma-separated name."""
    from speckd_bench.engine.tracking import tracker_names

    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    names = [EVERY_TRACKER, NO_TRACKER, *tracker_names()]
    return [prefix + name for name in names if name.startswith(last)]


ReportToOpt = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        metavar="<all|none|NAME,...>",
        autocompletion=_complete_trackers,
        help="Experiment trackers: all (every tracker whose package is installed), none (the default), or "
        "names, comma-separated, of accelerate's: aim, clearml, comet_ml, dvclive, mlflow, swanlab, "
        "tensorboard, trackio, wandb. Logs the config, training-log rows and final metrics; local files in "
        "<run>/trackers.",
    ),
]


def discover(plugins: list[Path] | None) -> None:
    """Register the tasks and methods of the built-in, installed and given plugin folders."""
    from speckd_bench.plugin_loading import load_plugins

    load_plugins(plugins)


def resolve_report_to(text: str | None) -> list[str]:
    """--report-to as tracker names: `all` adds every available tracker; unknown or uninstalled names fail
    in one line (a UserError)."""
    from speckd_bench.engine.tracking import parse_report_to

    names = [name.strip() for name in (text or "").split(",")]
    if EVERY_TRACKER in names:
        from accelerate.tracking import get_available_trackers

        names = [name for name in names if name != EVERY_TRACKER] + [str(t) for t in get_available_trackers()]
    return parse_report_to(",".join(names))
