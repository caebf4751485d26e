"""Progress of long steps: a live rich bar or spinner on a terminal; when stdout is not one (a log file,
CI, nohup, SLURM, a sweep worker), plain lines that start with the local time, without control codes or
carriage-return redraws: one when a step starts and ends, and for training one every `logging_steps` steps
and at least every `max_silence_s` seconds (checked at each step). Silent with --quiet.

Also the one home of console output: `console` (rich, stdout), `say` (a plain line on stdout), `log` (a
progress line on stdout, timestamped off a terminal) and `warn` (a plain line on stderr)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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


def log(text: str) -> None:
    """A progress line on stdout; off a terminal it starts with the local time (YYYY-MM-DD HH:MM:SS), on
    every line (rich's console.log leaves out a time equal to the previous one and pads to the width)."""
    say(text if console.is_terminal else f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}")


def warn(text: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    print(text, file=sys.stderr)


def plain_library_bars() -> None:
    """When stderr is not a terminal, turn off the tqdm bars of transformers, datasets and the hub (and the
    GGUF conversion's), which redraw with carriage returns; set before those libraries are imported, and
    inherited by child processes (sweep workers, accelerate launches)."""
    if not sys.stderr.isatty():
        for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(name, "1")


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
        log(f"{label}: start ({total} steps)")

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
        log(f"{self.label}: step {self.done}/{self.total}{shown}  elapsed {_clock(elapsed)}  eta {eta}")

    def end(self) -> None:
        log(f"{self.label}: done {self.done}/{self.total} in {_clock(time.monotonic() - self.t0)}")


@contextmanager
def progress_bar(label: str, total: int, quiet: bool, log_steps: bool = False) -> Iterator[_Bar]:
    """A live bar on a terminal, plain lines elsewhere; `log_steps`: a line every SETTINGS.logging_steps."""
    if quiet:
        yield _Bar(None, None)
        return
    if not console.is_terminal:
        lines = _Lines(label, total, SETTINGS.logging_steps if log_steps else None)
        yield lines
        lines.end()
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Bar(progress, progress.add_task(label, total=total, stats=""))


@contextmanager
def stage(label: str, quiet: bool) -> Iterator[None]:
    """A step without a bar: a spinner on a terminal, else a line when it starts and one when it ends."""
    if quiet:
        yield
        return
    if console.is_terminal:
        with console.status(label):
            yield
        return
    t0 = time.monotonic()
    log(f"{label}: start")
    yield
    log(f"{label}: done in {_clock(time.monotonic() - t0)}")
