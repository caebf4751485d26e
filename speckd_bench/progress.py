"""Progress of long steps: a live rich bar or spinner on a terminal, which leaves one line when it ends;
when stdout is not one (a log file, CI, nohup, SLURM, a sweep worker), plain lines that start with the
local time, without control codes or carriage-return redraws: one when a step starts and ends, and for
training one every `logging_steps` steps and at least every `max_silence_s` seconds (checked at each
step). Silent with --quiet.

Also the one home of console output: `console` (rich, stdout), `say` (a plain line on stdout), `log` (a
progress line on stdout, timestamped off a terminal), and `warn` and `fail` (a warning or an error: a
plain line on stderr through the `speckd_bench` logger)."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column


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


class _Stderr(logging.Handler):
    """The bare message on whatever sys.stderr is when a record is emitted (a redirected or captured one
    too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)


def _harness_logger() -> logging.Logger:
    """The `speckd_bench` logger: warnings and errors as plain lines on stderr; add handlers to it (or
    raise its level) to route or silence them."""
    logger = logging.getLogger("speckd_bench")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
        logger.propagate = False  # no second copy through a root handler the user configured
    return logger


LOGGER = _harness_logger()


def warn(text: str) -> None:
    """A warning of the harness: one plain line on stderr (no markup, no wrapping), through `LOGGER`."""
    LOGGER.warning(text)


def fail(text: str) -> None:
    """An error that ends a command: one plain line on stderr, through `LOGGER`."""
    LOGGER.error(text)


def plain_library_bars() -> None:
    """When stderr is not a terminal, turn off the tqdm bars of transformers, datasets and the hub (and the
    GGUF conversion's), which redraw with carriage returns; set before those libraries are imported, and
    inherited by child processes (sweep workers, accelerate launches)."""
    if not sys.stderr.isatty():
        for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(name, "1")


def _redraw(line: str) -> bool:
    return "\r" in line or "\x1b" in line


@contextmanager
def plain_stderr() -> Iterator[None]:
    """Off a terminal, what is written to sys.stderr meanwhile (a library's tqdm bars, its warnings) is held
    back and written when the block ends, without the lines that carry carriage-return redraws or control
    codes: the bars go, the warnings stay. On a terminal nothing changes."""
    if sys.stderr.isatty():
        yield
        return
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().split("\n") if line.strip() and not _redraw(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


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
    with Progress(*_columns(console.width), console=console) as progress:  # not transient: the bar stays
        yield _Bar(progress, progress.add_task(label, total=total, stats=""))


def _columns(width: int) -> tuple[ProgressColumn, ...]:
    """A bar's columns for a terminal `width` wide: the step counter and the times at full width, the label
    and the stats cut with an ellipsis to share what is left with a bar of at least 10, so at 80 columns
    `i/total`, elapsed and ETA stay whole."""
    fixed = Column(no_wrap=True)
    text = Column(no_wrap=True, overflow="ellipsis", max_width=max(8, (width - 50) // 2))
    return (
        SpinnerColumn(finished_text="✓", table_column=fixed),
        TextColumn("{task.description}", table_column=text),
        BarColumn(bar_width=max(10, width - 50 - 2 * text.max_width), table_column=fixed),
        MofNCompleteColumn(table_column=fixed),
        TimeElapsedColumn(table_column=fixed),
        TimeRemainingColumn(table_column=fixed),
        TextColumn("{task.fields[stats]}", table_column=text.copy()),
    )


@contextmanager
def stage(label: str, quiet: bool) -> Iterator[None]:
    """A step without a bar: a spinner on a terminal, else a line when it starts and one when it ends."""
    if quiet:
        yield
        return
    t0 = time.monotonic()
    if console.is_terminal:  # a spinner, then the one line it leaves
        with console.status(label):
            yield
        say(f"✓ {label} ({_clock(time.monotonic() - t0)})")
        return
    log(f"{label}: start")
    yield
    log(f"{label}: done in {_clock(time.monotonic() - t0)}")
