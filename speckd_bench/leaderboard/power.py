"""How many training seeds a family of comparisons needs: for each pair of a leaderboard section's groups
(each method against the baseline, or each SpecKD rule against its control gates), the paired per-seed
differences on one metric, their spread, the power the paired t-test has at the seeds run so far to detect
a difference of `effect`, and the seeds it needs for the target power.

The level is the one Holm's first (strictest) step uses, alpha / the number of comparisons in the family,
so the answer holds after the correction whatever the other comparisons give. The spread of the
differences is estimated from the seeds both ran (standard deviation, ddof 1): from three seeds it is a rough
estimate (two degrees of freedom), which is why a grid is planned with a margin and re-checked as seeds land.
Power is the two-sided one-sample t-test's on the differences, computed as the expectation, over the
chi-square law of the estimated variance, of the normal test's power: exact, and finite where the
noncentral t's distribution functions (scipy's, which statsmodels uses) return NaN, as they do for a large
noncentrality at few seeds, the very case of a spread far smaller than the effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from speckd_bench.leaderboard.gate_controls import control_pairs, controls_by_group, gated_groups
from speckd_bench.leaderboard.sections import Group, Section, pick_baseline, seed_values
from speckd_bench.leaderboard.stats import ALPHA

MAX_SEEDS = 1000


@dataclass(frozen=True)
class PowerRow:
    method: str
    against: str
    """The group the method is compared with."""
    n: int
    """Seeds both ran."""
    diff: float | None
    """Mean paired difference (method - against)."""
    sd: float | None
    """Standard deviation of the paired differences (None under 2 seeds)."""
    power: float | None
    """Power at n seeds to detect `effect` (None without a spread)."""
    needed: int | None
    """Seeds for the target power (None without a spread; MAX_SEEDS means out of reach)."""


def power_at(sd: float, effect: float, n: int, level: float) -> float:
    """Power of a two-sided paired t-test at n seeds to detect a mean difference `effect`."""
    if n < 2:
        return 0.0
    if sd == 0.0:
        return 1.0
    df = n - 1
    shift = effect / sd * math.sqrt(n)
    crit = float(stats.t.isf(level / 2, df))

    def rejects(chi2: float) -> float:
        """P(|T| > crit) given the variance estimate's chi-square value: T = (Z + shift) / sqrt(chi2 / df)."""
        bound = crit * math.sqrt(chi2 / df)
        return float(stats.norm.cdf(shift - bound) + stats.norm.cdf(-shift - bound))

    return float(stats.chi2.expect(rejects, args=(df,)))


def seeds_needed(sd: float, effect: float, level: float, target: float) -> int:
    """The fewest seeds (>= 2) whose power reaches `target`; MAX_SEEDS when none up to it does."""
    n = 2
    while n < MAX_SEEDS and power_at(sd, effect, n, level) < target:
        n += 1
    return n


def pair_rows(
    pairs: Sequence[tuple[Group, Group]],
    metric: str,
    effect: float,
    target: float = 0.8,
    alpha: float = ALPHA,
) -> list[PowerRow]:
    """One row per (method, against) pair, one Holm family: each at level alpha / len(pairs)."""
    level = alpha / max(1, len(pairs))
    rows = []
    for group, against in pairs:
        against_by_seed = dict(seed_values(against, metric))
        diffs = [v - against_by_seed[s] for s, v in seed_values(group, metric) if s in against_by_seed]
        n = len(diffs)
        sd = float(np.std(diffs, ddof=1)) if n >= 2 else None
        rows.append(
            PowerRow(
                group.label,
                against.label,
                n,
                float(np.mean(diffs)) if diffs else None,
                sd,
                power_at(sd, effect, n, level) if sd is not None else None,
                seeds_needed(sd, effect, level, target) if sd is not None else None,
            )
        )
    return rows


def baseline_pairs(section: Section, baseline: str) -> list[tuple[Group, Group]]:
    """(method group, baseline group) for every group of `section` other than the baseline's, in order."""
    base = pick_baseline(section.groups, baseline)
    return [] if base is None else [(g, base) for g in section.groups if g is not base]


def gate_pairs(section: Section, method: str) -> list[tuple[Group, Group]]:
    """(SpecKD group, control group) for each rule of `method` and each control gate run for it."""
    gated = gated_groups(section, method)
    return control_pairs(gated, controls_by_group(section, gated))


def format_power(rows: list[PowerRow], metric: str, effect: float, target: float) -> str:
    """A markdown table of the rows, with what they assume."""
    level = ALPHA / max(1, len(rows))
    head = (
        f"Paired differences (method - against) on {metric} over training seeds; power to detect "
        f"|Δ| = {effect:g} at level {level:.4g} (alpha {ALPHA:g} / {len(rows)} comparisons, Holm's first "
        f"step); seeds for power {target:g}.\n\n"
        "| method | against | seeds | mean Δ | sd of Δ | power now | seeds needed |\n"
        "|---|---|---|---|---|---|---|\n"
    )

    def num(value: float | None, digits: int = 4) -> str:
        return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"

    lines = [
        f"| {r.method} | {r.against} | {r.n} | {num(r.diff)} | {num(r.sd)} | {num(r.power, 2)} | "
        f"{'—' if r.needed is None else (f'> {MAX_SEEDS}' if r.needed >= MAX_SEEDS else r.needed)} |"
        for r in rows
    ]
    return head + "\n".join(lines)
