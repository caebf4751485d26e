"""How the leaderboard writes values as text: numbers, mean ± std, signed intervals, one-line cells and
markdown-safe names. Every renderer and sentence about the results goes through these."""

from __future__ import annotations

NO_VALUE = "-"

_MD_SPECIAL = "\\`*_<>|"
"""Characters that markdown would read as emphasis, code, HTML or a cell boundary."""


def number(value: float | None, digits: int) -> str:
    """The value with `digits` decimals; '-' for no value."""
    return NO_VALUE if value is None else f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """mean ± std; the mean alone when there is no std (reference rows); '-' without a mean."""
    if mean is None or std is None:
        return number(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval(low: float, high: float) -> str:
    """[+l.ll, +h.hh]: an interval of differences."""
    return f"[{low:+.2f}, {high:+.2f}]"


def signed_interval(diff: float, low: float | None, high: float | None) -> str:
    """+d.dd [+l.ll, +h.hh]: a difference and its interval, the interval left out when there is none."""
    return f"{diff:+.2f}" + ("" if low is None or high is None else f" {interval(low, high)}")


def one_line(text: str) -> str:
    """Text with every run of whitespace (newlines included) as one space: a cell or a line stays one."""
    return " ".join(str(text).split())


def md_escape(text: str) -> str:
    """Markdown text that renders as written: one line, its punctuation backslash-escaped (names from
    plugins may hold `|`, `_`, `<`, ...)."""
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in one_line(text))


def settings_text(settings: dict[str, object]) -> str:
    """k=v, ... of the settings that tell a method's groups apart, by the last part of each key."""
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in settings.items())
