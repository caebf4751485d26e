"""User-facing errors: one line that says what is wrong and how to fix it, printed without a traceback."""

from __future__ import annotations

import difflib
import signal
import threading
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """Bad input from the user (config, data, names, paths). The CLI prints it as one line, exit code 2."""


EXIT_INTERRUPTED = 130
"""Exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention)."""


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C (or SIGTERM) after saving what it had; the message says how to resume it
    (exit 130)."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Make SIGTERM (what a scheduler such as SLURM sends before it preempts a job) stop this process the
    way Ctrl-C does, with KeyboardInterrupt: a run then checkpoints, records 'interrupted' and says how to
    resume, instead of dying without a word."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
