"""How the leaderboard writes values as text: numbers, mean ± std, signed intervals, one-line cells and
markdown-safe names. Every renderer and sentence about the results goes through these."""

from __future__ import annotations

NO_VALUE = "-"

_MD_SPECIAL = "\\`*_<>|"
"""Characters that markdown would read as emphasis, code, HTML or a cell boundary."""

METRIC_DIGITS = {"tf_tvd": 4, "tf_fkl": 3, "tf_rkl": 3}
"""Decimals of the metrics (and of their `_prompt` forms) shown with more than the default two: tf_tvd
lies in [0, 1] and the differences of interest are a few thousandths; tf_fkl and tf_rkl are nats near 2
whose differences of interest are a few hundredths."""


def metric_digits(metric: str) -> int:
    """How many decimals a metric's values, spreads, differences and intervals are shown with."""
    return METRIC_DIGITS.get(metric.removesuffix("_prompt"), 2)


def number(value: float | None, digits: int) -> str:
    """The value with `digits` decimals; '-' for no value."""
    return NO_VALUE if value is None else f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """mean ± std; the mean alone when there is no std (reference rows); '-' without a mean."""
    if mean is None or std is None:
        return number(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval(low: float, high: float, digits: int) -> str:
    """[+l.ll, +h.hh]: an interval of differences, with `digits` decimals."""
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def signed_interval(diff: float, low: float | None, high: float | None, digits: int) -> str:
    """+d.dd [+l.ll, +h.hh]: a difference and its interval with `digits` decimals, the interval left out
    when there is none."""
    text = f"{diff:+.{digits}f}"
    return text if low is None or high is None else f"{text} {interval(low, high, digits)}"


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
