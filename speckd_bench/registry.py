"""One small name -> object registry, used for tasks, methods, divergences and metrics."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

from speckd_bench.errors import UserError, did_you_mean

T = TypeVar("T")

NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""What a task, suite or method may be called: it names files and folders (runs/<id>, plots)."""


class Registry(Generic[T]):
    """Named entries of one kind; lookups of unknown names fail with the closest names suggested."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UserError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; known: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import a plugin .py file as module `{prefix}_{stem}`; a broken file fails as one UserError line."""
    spec = importlib.util.spec_from_file_location(f"{prefix}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a broken plugin is user input: name it in one line
        del sys.modules[spec.name]
        raise UserError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from None
    return module
