"""How degenerate a model's outputs are: empty answers, few distinct n-grams, an output repeating itself.

A score means little when the outputs are empty or loops of one phrase; these figures go next to every
score so a reader sees it. Words are lower-cased whitespace tokens.

- empty: share of outputs with no word.
- distinct_1 / distinct_2: distinct word uni-/bigrams over all outputs / all uni-/bigrams (Li et al. 2016).
- repetition: per output with at least 4 words, 1 - distinct 4-grams / 4-grams of that output (how much of
  it repeats itself, "seq-rep-4", Welleck et al. 2020), averaged over those outputs; 0 when none has 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# An output set is flagged degenerate when any of these limits is crossed.
MAX_EMPTY = 0.10
MIN_DISTINCT_2 = 0.5
MAX_REPETITION = 0.25


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _distinct(outputs: list[list[str]], n: int) -> float:
    grams = [g for words in outputs for g in _ngrams(words, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _repetition(words: list[str], n: int = 4) -> float:
    grams = _ngrams(words, n)
    return 1.0 - len(set(grams)) / len(grams)


def degeneracy(outputs: Sequence[str]) -> dict[str, float]:
    """The four figures above for a list of model outputs."""
    words = [text.lower().split() for text in outputs]
    long_enough = [w for w in words if len(w) >= 4]
    return {
        "empty": sum(not w for w in words) / len(words) if words else 0.0,
        "distinct_1": _distinct(words, 1),
        "distinct_2": _distinct(words, 2),
        "repetition": sum(map(_repetition, long_enough)) / len(long_enough) if long_enough else 0.0,
    }


def degenerate_reasons(figures: dict[str, Any]) -> list[str]:
    """Why a set of outputs counts as degenerate (empty list: it does not)."""
    reasons = []
    if figures.get("empty", 0.0) > MAX_EMPTY:
        reasons.append(f"{figures['empty']:.0%} empty")
    if figures.get("distinct_2", 1.0) < MIN_DISTINCT_2:
        reasons.append(f"distinct-2 {figures['distinct_2']:.2f}")
    if figures.get("repetition", 0.0) > MAX_REPETITION:
        reasons.append(f"repetition {figures['repetition']:.2f}")
    return reasons
