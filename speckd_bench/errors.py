"""User-facing errors: one line that says what is wrong and how to fix it, printed without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (config, data, names, paths). The CLI prints it as one line, exit code 2."""


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C after saving what it had; the message says how to resume it (exit 130)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
