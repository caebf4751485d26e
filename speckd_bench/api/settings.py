"""Declared settings: a dataclass field with its help, allowed values and range, checked in one place.

k: int = setting(5, "teacher top-k of rule=topk", check=lambda v: v >= 1, expected="k >= 1")
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

from speckd_bench.errors import did_you_mean


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: tuple[str, ...] = (),
    check: Callable[[Any], bool] | None = None,
    expected: str = "",
) -> Any:
    """A dataclass field that carries its help, its choices and its range check."""
    meta = {"help": help, "choices": choices, "check": check, "expected": expected}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def finite(low: float | None = None, high: float | None = None, *, open_low: bool = False) -> Callable:
    """A check for a finite number within [low, high] ((low, high] when open_low)."""

    def ok(v: float) -> bool:
        if not math.isfinite(v):
            return False
        if low is not None and (v <= low if open_low else v < low):
            return False
        return high is None or v <= high

    return ok


def _metadata(cls: type, name: str) -> Any:
    """A field's declared metadata; a subclass that only changes a default inherits its base's."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata:
            return declared.metadata
    return {}


def fields_of(obj: Any) -> dict[str, tuple[Any, Any]]:
    """name -> (metadata, type hint) of every field of a dataclass instance."""
    hints = typing.get_type_hints(type(obj))
    return {f.name: (_metadata(type(obj), f.name), hints[f.name]) for f in dataclasses.fields(obj)}


MAX_INT = 2**31 - 1
"""Every integer setting (a size, a count, a seed) is at most this: larger values are typos (1e26)."""


def check_values(obj: Any, prefix: str) -> Iterator[str]:
    """The one-line error of every field of `obj` outside its choices or range, or an integer above
    MAX_INT."""
    for name, (meta, _) in fields_of(obj).items():
        value = getattr(obj, name)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            yield f"{prefix}{name}={value!r} is out of range: integer settings are at most {MAX_INT}"
            continue
        choices = meta.get("choices", ())
        if choices and value not in choices:
            yield f"{prefix}{name}={value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
        check = meta.get("check")
        if check is not None and not check(value):
            yield f"{prefix}{name}={value!r} is out of range: expected {meta['expected']}"
