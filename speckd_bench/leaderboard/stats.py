"""Statistics of the leaderboard: mean and std over training seeds, coefficient of variation, seed-level
t-tests of a method against a baseline with Holm's correction over a family of comparisons, and a paired
bootstrap confidence interval over the eval prompts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

RESAMPLES = 10_000
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
MIN_SEEDS_SIGNIFICANT = 3
"""A difference is marked significant only when both sides have at least this many training seeds."""


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float
    """Sample standard deviation (ddof=1); 0.0 for a single value."""
    n: int


def mean_std(values: list[float]) -> MeanStd | None:
    """Mean and sample std of the values, None when there are none."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return MeanStd(float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size))


def coefficient_of_variation(values: list[float]) -> float | None:
    """Population std / |mean| of a series (e.g. the grad norms of one run); None when undefined."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size < 2 or arr.mean() == 0:
        return None
    return float(arr.std() / abs(arr.mean()))


@dataclass(frozen=True)
class BootstrapCI:
    diff: float
    """mean(a) - mean(b) over all seeds and prompts."""
    low: float
    high: float
    confidence: float
    n_prompts: int
    seeds_paired: bool
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _seed_counts(rng: np.random.Generator, n_seeds: int, size: int) -> np.ndarray:
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size).astype(np.float64)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    seeds_paired: bool,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    chunk: int = 1000,
) -> BootstrapCI:
    """Percentile bootstrap CI of mean(a) - mean(b).

    a: [training seeds of A, prompts], b: [training seeds of B, prompts]: per-prompt scores (already
    averaged over eval seeds), columns aligned on the same prompts. Each resample draws the prompts with
    replacement, one draw shared by a and b (paired), and the training seeds with replacement: one draw
    shared by both when `seeds_paired` (row i of a and of b ran with the same seed), independent draws
    otherwise. So the interval reflects both the prompt sample and the seed-to-seed variation.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"need [seeds, prompts] arrays over the same prompts, got {a.shape} and {b.shape}")
    if seeds_paired and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired seeds need as many rows in a and b, got {a.shape[0]} and {b.shape[0]}")
    (sa, n_prompts), sb = a.shape, b.shape[0]
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        prompts = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=size)
        seeds_a = _seed_counts(rng, sa, size)
        seeds_b = seeds_a if seeds_paired else _seed_counts(rng, sb, size)
        mean_a = ((seeds_a @ a) * prompts).sum(axis=1) / (sa * n_prompts)
        mean_b = ((seeds_b @ b) * prompts).sum(axis=1) / (sb * n_prompts)
        stats.append(mean_a - mean_b)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(np.concatenate(stats), [tail, 1.0 - tail])
    return BootstrapCI(
        diff=float(a.mean() - b.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_prompts=n_prompts,
        seeds_paired=seeds_paired,
        resamples=resamples,
    )


@dataclass(frozen=True)
class SeedComparison:
    """A method against a baseline over training seeds (one run-level value per seed and side)."""

    diff: float
    """mean(a) - mean(b)."""
    low: float | None
    high: float | None
    confidence: float | None
    """Confidence of [low, high]: Holm-adjusted, 1 - alpha / (m - i + 1) for the i-th smallest p of m."""
    p: float | None
    p_holm: float | None
    paired: bool
    """Paired t-test on per-seed differences; else Welch's t-test."""
    n: int
    n_base: int
    significant: bool
    """Holm rejects at alpha and both sides have MIN_SEEDS_SIGNIFICANT seeds."""


def _constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) <= 1e-9 * max(1.0, float(np.abs(values).max())))


def seed_ttest(a: Sequence[float], b: Sequence[float], *, paired: bool) -> Any | None:
    """scipy's paired (a[i] and b[i] share seed i) or Welch t-test; None with fewer than 2 seeds on a side
    or no variation to test (constant differences, or both sides constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if min(a.size, b.size) < 2 or (_constant(a - b) if paired else _constant(a) and _constant(b)):
        return None
    with warnings.catch_warnings():  # one constant side of a Welch test is fine (its variance is 0)
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        return stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)


def compare_family(
    family: Sequence[tuple[Sequence[float], Sequence[float], bool]], alpha: float = ALPHA
) -> list[SeedComparison]:
    """Each (a, b, paired) of one family (the methods compared with one baseline on one metric): t-test,
    Holm-corrected p over the comparisons that could be tested, and the matching Holm-adjusted interval."""
    tests = [seed_ttest(a, b, paired=paired) for a, b, paired in family]
    tested = [i for i, t in enumerate(tests) if t is not None]
    holm: dict[int, tuple[bool, float]] = {}
    level: dict[int, float] = {}
    if tested:
        reject, p_holm, _, _ = multipletests([tests[i].pvalue for i in tested], alpha=alpha, method="holm")
        holm = {i: (bool(r), float(p)) for i, r, p in zip(tested, reject, p_holm, strict=True)}
        by_p = sorted(tested, key=lambda i: tests[i].pvalue)
        level = {i: 1.0 - alpha / (len(tested) - rank) for rank, i in enumerate(by_p)}
    out = []
    for i, (a, b, paired) in enumerate(family):
        test, (reject, p_holm) = tests[i], holm.get(i, (False, None))
        ci = test.confidence_interval(level[i]) if test is not None else None
        out.append(
            SeedComparison(
                diff=float(np.mean(a) - np.mean(b)),
                low=float(ci.low) if ci else None,
                high=float(ci.high) if ci else None,
                confidence=level.get(i),
                p=float(test.pvalue) if test is not None else None,
                p_holm=p_holm,
                paired=paired,
                n=len(a),
                n_base=len(b),
                significant=reject and min(len(a), len(b)) >= MIN_SEEDS_SIGNIFICANT,
            )
        )
    return out
