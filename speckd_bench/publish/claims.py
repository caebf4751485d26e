"""The findings of the results README, written from the leaderboard's statistics: every sentence that
says one method differs from another is generated here from the training-seed comparisons (paired
t-interval over training seeds, Holm across the comparisons of one family), never typed in by hand.

Per section: the metric judged, each method against the baseline, the gate question (SpecKD's gate
against the baseline and against random and teacher-confidence control gates at the same acceptance
rate, on the judged metric and again on the other fidelity metrics), the training stability (each
method's, then SpecKD's gradient-norm variation against the baseline and the same controls), and whether
the published ordering holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from speckd_bench.api.metrics import Better, better
from speckd_bench.formatting import md_escape
from speckd_bench.leaderboard.gate_controls import CONTROLS, control_pairs, controls_by_group, gated_groups
from speckd_bench.leaderboard.runs import is_finite
from speckd_bench.leaderboard.sections import Group, Section
from speckd_bench.leaderboard.stats import ALPHA, MIN_SEEDS_SIGNIFICANT, SeedComparison, compare_family

MODE_SEEKING = ("rkl", "srkl", "jsd")
"""Divergence methods whose students concentrate on the teacher's modes (reverse KL and its relatives)."""
MASS_COVERING = ("fkl", "sft")
"""Methods whose students spread mass over everything the teacher (or the data) allows."""
PUBLISHED_ORDER = ("sft", "fkl", "srkl")
"""The ordering the paper reports on the main metric, worst first."""


def _digits(cmp: SeedComparison) -> int:
    """Decimals that show two significant digits of the interval's half-width (of the difference without
    an interval), at least two."""
    half = (cmp.high - cmp.low) / 2 if cmp.low is not None and cmp.high is not None else abs(cmp.diff)
    return max(2, 1 - math.floor(math.log10(half))) if half > 0 else 2


def difference(cmp: SeedComparison, against: str) -> str:
    """'+1.95 [+0.50, +3.40] against fkl (Holm p 0.028, significant)': a comparison's difference, its
    Holm-adjusted interval over training seeds, what it is against and its verdict."""
    d = _digits(cmp)
    if cmp.low is None or cmp.high is None or cmp.p_holm is None:
        return f"{cmp.diff:+.{d}f} against {against} (too few training seeds or no variation for a t-test)"
    verdict = "significant" if cmp.significant else "not significant"
    if cmp.p_holm < ALPHA and not cmp.significant:
        verdict += f": fewer than {MIN_SEEDS_SIGNIFICANT} seeds on a side"
    ci = f"[{cmp.low:+.{d}f}, {cmp.high:+.{d}f}]"
    return f"{cmp.diff:+.{d}f} {ci} against {against} (Holm p {cmp.p_holm:.2g}, {verdict})"


def _seed_values(group: Group, metric: str) -> dict[int, float]:
    """Training seed -> the run's finite value of `metric` after training."""
    values = {r.seed: r.after_metric(group.eval_set, metric) for r in group.runs}
    return {s: float(v) for s, v in sorted(values.items()) if is_finite(v)}


def _seed_grad_norm_cv(group: Group) -> dict[int, float]:
    """Training seed -> the coefficient of variation of the run's gradient norm over its steps."""
    values = {r.seed: r.grad_norm_cv for r in group.runs}
    return {s: v for s, v in sorted(values.items()) if v is not None}


def compare(pairs: Sequence[tuple[Group, Group]], metric: str) -> list[SeedComparison | None]:
    """a - b on `metric` for each (a, b), one Holm family (paired when both ran the same seeds); None
    where a side has no value."""
    return _compare(pairs, lambda group: _seed_values(group, metric))


def _compare(
    pairs: Sequence[tuple[Group, Group]], seed_values: Callable[[Group], dict[int, float]]
) -> list[SeedComparison | None]:
    values = [(seed_values(a), seed_values(b)) for a, b in pairs]
    tested = [i for i, (a, b) in enumerate(values) if a and b]
    family = [(list(a.values()), list(b.values()), set(a) == set(b)) for a, b in (values[i] for i in tested)]
    found = dict(zip(tested, compare_family(family), strict=True))
    return [found.get(i) for i in range(len(pairs))]


def _plain(groups: Sequence[Group], method: str) -> Group | None:
    """The group of `method` with the fewest distinguishing settings (its default configuration)."""
    return min((g for g in groups if g.method == method), key=lambda g: len(g.shown_settings), default=None)


def judged_metric(section: Section) -> str:
    metric = section.metrics[0]
    head = f"Judged on {md_escape(metric)} ({better(metric).value} is better)."
    if not section.missing:
        return head
    names = ", ".join(md_escape(m) for m in section.missing)
    return (
        f"{head} Asked for but in none of these records: {names} (the records predate it); the findings "
        f"use {md_escape(metric)}, the first asked-for metric the records carry."
    )


def against_baseline(section: Section) -> list[str]:
    """One sentence per method group compared with the section's baseline."""
    metric = section.metrics[0]
    base = section.baseline_group
    if base is None:
        return [f"No {md_escape(section.baseline or 'baseline')} runs here: no method is compared with one."]
    return [
        f"{md_escape(g.label)} changes {md_escape(metric)} by {difference(cmp, md_escape(base.label))}."
        for g in section.groups
        if (cmp := g.row.delta.get(metric)) is not None
    ]


def _changes(subject: str, quantity: str, parts: list[str], missing: list[str], empty: list[str]) -> str:
    """'SUBJECT changes QUANTITY by ... and by ... at the same acceptance rate.', with the controls not
    run yet and those without values on both sides named."""
    if parts:
        said = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        text = f"{subject} changes {quantity} {said}"
        text += " at the same acceptance rate." if len(parts) > 1 else "."
    else:
        text = f"{subject} has no comparison."
    if missing:
        text += f" Not run yet at the same acceptance rate: {' and '.join(missing)}."
    if empty:
        text += f" No values of {quantity} on both sides: {' and '.join(empty)}."
    return text


def _gate_parts(
    controls: dict[str, Group], found: dict[tuple[int, int], SeedComparison | None], gated: Group
) -> tuple[list[str], list[str], list[str]]:
    """The control comparisons of one gated group: sentence parts, controls missing, controls without
    values on both sides."""
    parts, missing, empty = [], [], []
    for gate, name in CONTROLS:
        control = controls.get(gate)
        result = found.get((id(gated), id(control))) if control else None
        if result is not None:
            parts.append(f"by {difference(result, name)}")
        else:
            (missing if control is None else empty).append(name)
    return parts, missing, empty


def gate_question(section: Section, method: str, metric: str | None = None) -> list[str]:
    """Per SpecKD group (each rule variant): its difference on `metric` (the judged one by default) to
    the baseline, to a random gate and to a teacher-confidence gate at the same acceptance rate (one Holm
    family over the control comparisons); 'not run yet' for a missing control."""
    metric = metric or section.metrics[0]
    gated = gated_groups(section, method)
    if not gated:
        return [f"The gate question: no {md_escape(method)} runs with its own gate yet."]
    controls = controls_by_group(section, gated)
    pairs = control_pairs(gated, controls)
    found = {(id(a), id(b)): cmp for (a, b), cmp in zip(pairs, compare(pairs, metric), strict=True)}
    base = section.baseline_group
    lines = []
    for g in gated:
        cmp = g.row.delta.get(metric)
        parts, missing, empty = _gate_parts(controls[id(g)], found, g)
        parts = [f"by {difference(cmp, md_escape(base.label))}", *parts] if base and cmp else parts
        rate = "" if g.row.tar_mean is None else f", accepting {g.row.tar_mean:.0%} of the tokens"
        subject = f"The SpecKD gate ({md_escape(g.label)}{rate})"
        lines.append(_changes(subject, md_escape(metric), parts, missing, empty))
    return lines


def fidelity_metrics(section: Section) -> list[str]:
    """The shown teacher-forced fidelity metrics pooled over tokens (not their per-prompt means)."""
    return [m for m in section.metrics if m.startswith("tf_") and not m.endswith("_prompt")]


def gate_question_elsewhere(section: Section, method: str) -> list[str]:
    """The gate question asked again on each other fidelity metric, so an answer that holds on the judged
    metric only is seen as such; then, per SpecKD group, the fidelity metrics on which it is better and
    worse than the baseline."""
    gated = gated_groups(section, method)
    base = section.baseline_group
    others = [m for m in fidelity_metrics(section) if m != section.metrics[0]]
    if not gated or not others:
        return []
    lines = [
        f"On {md_escape(m)} ({better(m).value} is better): " + " ".join(gate_question(section, method, m))
        for m in others
    ]
    return lines + [_sides(section, g, base.label) for g in gated] if base else lines


def _sides(section: Section, gated: Group, base: str) -> str:
    """'Against fkl, the SpecKD gate (...) is better on tf_tvd, tf_rkl and worse on tf_fkl (not
    significant).': each fidelity metric by the direction of its difference, with its verdict."""
    sides: dict[str, list[str]] = {"better": [], "worse": []}
    for metric in fidelity_metrics(section):
        cmp = gated.row.delta.get(metric)
        if cmp is None or cmp.diff == 0:
            continue
        side = "better" if (cmp.diff < 0) == (better(metric) is Better.LOWER) else "worse"
        sides[side].append(md_escape(metric) + ("" if cmp.significant else " (not significant)"))
    said = " and ".join(f"{side} on {', '.join(names)}" for side, names in sides.items() if names)
    return (
        f"Against {md_escape(base)}, the SpecKD gate ({md_escape(gated.label)}) is {said or 'not compared'}."
    )


def gate_stability(section: Section, method: str) -> list[str]:
    """Per SpecKD group: the grad-norm coefficient of variation of its runs against the baseline's and
    the two control gates' at the same acceptance rate (a paired t over training seeds, one Holm family
    over all these comparisons), then its seed std of the judged metric beside the baseline's (stated,
    not tested: a handful of seeds gives a variance comparison little power)."""
    metric, gated = section.metrics[0], gated_groups(section, method)
    base = section.baseline_group
    controls = controls_by_group(section, gated)
    pairs = [(g, base) for g in gated if base is not None] + control_pairs(gated, controls)
    found = {
        (id(a), id(b)): cmp for (a, b), cmp in zip(pairs, _compare(pairs, _seed_grad_norm_cv), strict=True)
    }
    lines = []
    for g in gated:
        parts, missing, empty = _gate_parts(controls[id(g)], found, g)
        if base is not None and (cmp := found.get((id(g), id(base)))) is not None:
            parts = [f"by {difference(cmp, md_escape(base.label))}", *parts]
        text = _changes(f"The SpecKD gate ({md_escape(g.label)})", "the grad-norm coefficient of variation",
                        parts, missing, empty)  # fmt: skip
        spread, base_spread = g.row.metrics[metric], base.row.metrics[metric] if base else None
        if base_spread and spread.n > 1 and base_spread.n > 1 and spread.std is not None:
            d = _spread_digits({"a": spread.std, "b": base_spread.std or 0.0})
            text += (
                f" Its seed std of {md_escape(metric)} is {spread.std:.{d}f} (n={spread.n}) against "
                f"{md_escape(base.label)}'s {base_spread.std:.{d}f} (n={base_spread.n}), not tested."
            )
        lines.append(text)
    return lines


def _span(values: dict[str, float], digits: int) -> str:
    """'ranges from 0.21 (sft) to 0.43 (rkl)', or 'is 0.21 for every method'."""
    low, high = min(values, key=values.get), max(values, key=values.get)
    if f"{values[low]:.{digits}f}" == f"{values[high]:.{digits}f}":
        who = "every method" if len(values) > 1 else md_escape(low)
        return f"is {values[low]:.{digits}f} for {who}"
    low_text, high_text = (
        f"{values[low]:.{digits}f} ({md_escape(low)})",
        f"{values[high]:.{digits}f} ({md_escape(high)})",
    )
    return f"ranges from {low_text} to {high_text}"


def _spread_digits(values: dict[str, float]) -> int:
    """Decimals that show two significant digits of the largest value, at least two."""
    top = max(values.values())
    return max(2, 1 - math.floor(math.log10(top))) if top > 0 else 2


def _listed(values: dict[str, float], spec: str) -> str:
    return ", ".join(f"{md_escape(k)} {v:{spec}}" for k, v in values.items())


def stability(section: Section) -> list[str]:
    """Seed spread of the judged metric, loss spikes, grad-norm variation and divergences, per method
    group, from the runs' training summaries and logs."""
    metric, rows = section.metrics[0], section.methods
    spread = {
        r.label: s for r in rows if (s := r.metrics[metric].std) is not None and r.metrics[metric].n > 1
    }
    spikes = {r.label: r.loss_spikes_per_run for r in rows if r.loss_spikes_per_run}
    cv = {r.label: r.grad_norm_cv for r in rows if r.grad_norm_cv is not None}
    diverged = {r.label: r.diverged for r in rows if r.diverged}
    parts = [
        f"the seed std of {md_escape(metric)} {_span(spread, _spread_digits(spread))}"
        if spread
        else "no method has two seeds",
        f"loss spikes per run: {_listed(spikes, '.2f')}, none for the others" if spikes else "no loss spikes",
        f"the grad-norm coefficient of variation {_span(cv, 2)}" if cv else "no grad norms logged",
        f"diverged runs: {_listed(diverged, 'd')}" if diverged else "no run diverged",
    ]
    return [f"Over training seeds, {'; '.join(parts)}."]


def ordering(section: Section, order: Sequence[str] = PUBLISHED_ORDER) -> list[str]:
    """Does the table agree with the published ordering (worst first) on the judged metric? Each step
    from the statistics the leaderboard computes: against the baseline where one side is it."""
    metric = section.metrics[0]
    groups = [_plain(section.groups, m) for m in order]
    claim = f"The published ordering {' < '.join(order)} on {md_escape(metric)}"
    if any(g is None for g in groups):
        missing = ", ".join(m for m, g in zip(order, groups, strict=True) if g is None)
        return [f"{claim}: cannot be checked, no runs of {missing}."]
    steps = [_step(section, lower, upper, metric) for lower, upper in zip(groups, groups[1:], strict=False)]
    sign = better(metric).sign
    agrees = all(cmp is not None and sign * cmp.diff > 0 for cmp in steps)
    significant = all(cmp is not None and cmp.significant for cmp in steps)
    verdict = "the table agrees" if agrees else "the table does not agree"
    if agrees:
        verdict += (
            ", every step significant" if significant else " on the means, not every step is significant"
        )
    texts = [
        f"{md_escape(b.label)} changes it by {difference(cmp, md_escape(a.label))}"
        if cmp
        else f"{md_escape(b.label)} against {md_escape(a.label)}: no values"
        for a, b, cmp in zip(groups, groups[1:], steps, strict=False)
    ]
    return [f"{claim}: {verdict} ({'; '.join(texts)})."]


def _step(section: Section, lower: Group, upper: Group, metric: str) -> SeedComparison | None:
    """upper - lower: the leaderboard's own comparison when lower or upper is the baseline, else a
    comparison of the two alone."""
    if upper.row.is_baseline and (cmp := lower.row.delta.get(metric)) is not None:
        return _flipped(cmp)
    if lower.row.is_baseline:
        return upper.row.delta.get(metric)
    return compare([(upper, lower)], metric)[0]


def _flipped(cmp: SeedComparison) -> SeedComparison:
    """b - a from a - b."""
    low = None if cmp.high is None else -cmp.high
    high = None if cmp.low is None else -cmp.low
    return SeedComparison(
        -cmp.diff,
        low,
        high,
        cmp.confidence,
        cmp.p,
        cmp.p_holm,
        cmp.paired,
        cmp.n_base,
        cmp.n,
        cmp.significant,
    )


def metric_ranking(section: Section) -> list[str]:
    """How each shown fidelity metric orders the plain (ungated, default-setting) runs of the
    mode-seeking and the mass-covering methods: rank by the mean over training seeds, best first."""
    groups = [g for m in (*MODE_SEEKING, *MASS_COVERING) if (g := _plain(section.groups, m))]
    if not any(g.method in MODE_SEEKING for g in groups) or not any(
        g.method in MASS_COVERING for g in groups
    ):
        return [
            "Not measured here: the table lacks a mode-seeking (rkl, srkl, jsd) or a mass-covering (fkl, "
            "sft) run."
        ]
    lines = []
    for metric in fidelity_metrics(section):
        means = {g.method: g.row.metrics[metric].mean for g in groups if metric in g.row.metrics}
        ranked = sorted(
            ((m, v) for m, v in means.items() if is_finite(v)),
            key=lambda mv: mv[1] if better(metric) is Better.LOWER else -mv[1],
        )
        if not ranked:
            continue
        order = ", ".join(
            f"{md_escape(m)}{' (mode-seeking)' if m in MODE_SEEKING else ''}" for m, _ in ranked
        )
        lines.append(f"{metric} ({better(metric).value} is better) ranks, best first: {order}.")
    return lines


def findings(sections: Sequence[Section], method: str) -> list[str]:
    """The generated findings section of the README: markdown lines."""
    lines = [
        "## Findings (generated)",
        "",
        "Written by `speckd-bench report` from the statistics of the table below; every difference is a "
        "training-seed statistic: the mean difference over training seeds with a Holm-adjusted t-interval "
        "(paired when both sides ran the same seeds) and a Holm-corrected p across the comparisons of one "
        f"family; significant means p < {ALPHA:g} after Holm with at least {MIN_SEEDS_SIGNIFICANT} seeds on "
        "each side, and not significant means the data cannot tell, not that the methods are equal.",
        "",
    ]
    for s in sections:
        lines += [f"### {md_escape(s.eval_set)}", "", judged_metric(s), ""]
        lines += [f"- {line}" for line in against_baseline(s)] + [""]
        lines += ["**The gate question.** " + " ".join(gate_question(s, method)), ""]
        if elsewhere := gate_question_elsewhere(s, method):
            lines += [
                "**The same question on the other fidelity metrics** (the same comparisons, Holm within "
                "each metric; the judged metric was fixed before the runs, these say whether its answer "
                "depends on it). " + " ".join(elsewhere),
                "",
            ]
        lines += ["**Stability.** " + " ".join([*stability(s), *gate_stability(s, method)]), ""]
        lines += ["**Published ordering.** " + " ".join(ordering(s)), ""]
        lines += [
            "**How the metrics rank the divergence families** (means over training seeds; the differences "
            "and their significance are in the table). " + " ".join(metric_ranking(s)),
            "",
        ]
    return lines
