"""Options, and the plugin loading they drive, shared by several command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PluginsOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugins", help="Directory of task YAML / method .py plugins (repeatable)."),
]
MirrorOpt = Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")]


def discover(plugins: list[Path] | None) -> None:
    """Register the tasks and methods of the built-in, installed and given plugin folders."""
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.methods.discovery import discover_methods

    discover_tasks(plugins)
    discover_methods(plugins)
