"""Plugin loading: register the tasks and methods of the built-in, installed ($SPECKD_PLUGINS) and given
plugin folders, as every command that names a task or a method does first."""

from __future__ import annotations

from pathlib import Path

from speckd_bench.data.tasks import discover_tasks
from speckd_bench.methods.discovery import discover_methods


def load_plugins(dirs: list[Path] | None = None) -> None:
    """Register every task YAML and method .py of the plugin folders, `dirs` (e.g. --plugins) last."""
    discover_tasks(dirs)
    discover_methods(dirs)
