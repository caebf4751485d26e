"""Progress of long steps: rich bars on a terminal; plain, timestamped lines when stdout is a file (CI,
nohup, SLURM): one when a step starts and ends, and for training one every `logging_steps` steps and at
least every `max_silence_s` seconds (checked at each step). Silent with --quiet.

Also the one home of console output: `console` (rich, stdout), `say` (a plain line on stdout) and `warn`
(a plain line on stderr)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _stdout_console() -> Console:
    """Rich output on stdout: lines stay whole (soft wrap); tables take a terminal's width, else $COLUMNS,
    else 240 columns, so output piped to a file or a log is not folded at rich's default of 80."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(soft_wrap=True, width=240)


console = _stdout_console()


@dataclass
class LogSettings:
    logging_steps: int = 10
    """Training steps between two plain progress lines (the name HF Trainer users know)."""
    max_silence_s: float = 30.0
    """Longest gap between two plain lines of a step that is still advancing."""


SETTINGS = LogSettings()


def say(text: str) -> None:
    """One line on stdout, never wrapped, markup shown as written."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    print(text, file=sys.stderr)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _stat(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.4g}"


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def start_at(self, done: int) -> None:
        """Steps done before this bar started (a resumed run): counted, not timed."""
        self.advance(done)

    def advance(self, n: int = 1, **stats: float | None) -> None:
        if self._progress is None:
            return
        shown = "  ".join(f"{k} {v:.3g}" for k, v in stats.items() if v is not None)
        self._progress.update(self._task, advance=n, stats=shown)


class _Lines(_Bar):
    """Plain lines: `label: step i/total  loss 2.31  ...  elapsed 0:00:12  eta 0:00:36`."""

    def __init__(self, label: str, total: int, every: int | None) -> None:
        super().__init__(None, None)
        self.label, self.total, self.every = label, total, every
        self.done = self.skipped = 0
        self.t0 = self.last = time.monotonic()
        say(f"{label}: start ({total} steps)")

    def start_at(self, done: int) -> None:
        self.done = self.skipped = done

    def advance(self, n: int = 1, **stats: float | None) -> None:
        self.done += n
        now = time.monotonic()
        on_step = self.every is not None and (self.done % self.every == 0 or self.done == self.total)
        if not (on_step or now - self.last >= SETTINGS.max_silence_s):
            return
        self.last = now
        elapsed = now - self.t0
        rate = (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate else "?"
        shown = "".join(f"  {k} {_stat(v)}" for k, v in stats.items() if v is not None)
        say(f"{self.label}: step {self.done}/{self.total}{shown}  elapsed {_clock(elapsed)}  eta {eta}")

    def end(self) -> None:
        say(f"{self.label}: done {self.done}/{self.total} in {_clock(time.monotonic() - self.t0)}")


@contextmanager
def progress_bar(label: str, total: int, quiet: bool, log_steps: bool = False) -> Iterator[_Bar]:
    """A bar on a terminal, plain lines elsewhere; `log_steps`: a line every SETTINGS.logging_steps."""
    if quiet:
        yield _Bar(None, None)
        return
    if not console.is_terminal:
        lines = _Lines(label, total, SETTINGS.logging_steps if log_steps else None)
        yield lines
        lines.end()
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


@contextmanager
def stage(label: str, quiet: bool) -> Iterator[None]:
    """A step without a bar: a line when it starts and one when it ends, unless quiet or on a terminal."""
    plain = not quiet and not console.is_terminal
    t0 = time.monotonic()
    if plain:
        say(f"{label}: start")
    yield
    if plain:
        say(f"{label}: done in {_clock(time.monotonic() - t0)}")
