"""Reading JSON Lines files: the one reader for task data, training logs and samples.

Two kinds of file, one rule each:
- input files (task rows): a line that is not a JSON object fails, naming the file and line;
- files the harness appends to (train_log.jsonl, samples.jsonl): a last line without its newline (torn
  by a kill) is left out, and so is a line that is not a JSON object, its number reported in `skipped`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speckd_bench.errors import UserError


def _parse(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    """One non-blank line as a JSON object; anything else fails naming the file and line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}:{number}: not UTF-8 text (byte {exc.start} of the line)") from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}:{number}: JSON nested too deeply") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object per line")
    return row


def numbered_objects(
    path: Path, *, appended: bool = False, skipped: list[int] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line. `appended`: the file is one the harness appends to
    (see the module docstring); line numbers of unreadable lines go to `skipped` when given."""
    out = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip() or (appended and not raw.endswith(b"\n")):
                continue
            try:
                out.append((number, _parse(path, number, raw)))
            except UserError:
                if not appended:
                    raise
                if skipped is not None:
                    skipped.append(number)
    return out


def read_jsonl(
    path: Path, *, appended: bool = False, skipped: list[int] | None = None
) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file (see numbered_objects)."""
    return [row for _, row in numbered_objects(path, appended=appended, skipped=skipped)]
