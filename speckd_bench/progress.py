"""Rich progress bars for long steps; silent with --quiet or when stdout is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=False)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **stats: float | None) -> None:
        if self._progress is None:
            return
        shown = "  ".join(f"{k} {v:.3g}" for k, v in stats.items() if v is not None)
        self._progress.update(self._task, advance=n, stats=shown)


@contextmanager
def progress_bar(label: str, total: int, quiet: bool) -> Iterator[_Bar]:
    if quiet or not console.is_terminal:
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Bar(progress, progress.add_task(label, total=total, stats=""))
