"""Groups of runs -> sections of typed rows.

A group is every run of one eval set whose configs are equal but for the seed (and paths): groups that
differ in anything else are never averaged together. Groups that share a protocol (eval set, task,
preset, models, data, evaluation, training budget and the SFT warm start they began from) form one
section: their rows are comparable, the baseline of a row comes from its own section, and the best value
of a column is found within it. Each section opens with reference rows (teacher, raw and warm-start
student, trivial floors) that put its scores in context.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speckd_bench.api.metrics import FIDELITY_METRICS, Better, better
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.formatting import metric_digits, number, settings_text
from speckd_bench.leaderboard.columns import SORT_NAMES, sort_column
from speckd_bench.leaderboard.rows import LeaderboardRow, MetricSummary, RowContext, best_row
from speckd_bench.leaderboard.runs import Run, created_at, is_finite, values_at
from speckd_bench.leaderboard.stats import (
    BootstrapCI,
    SeedComparison,
    compare_family,
    mean_std,
    paired_bootstrap,
)
from speckd_bench.records.run_record import RunRecord

# Keys that make up a protocol (what must be equal for two rows to be compared); the rest are the
# method's settings (method.*, learning rate, schedule, ...).
_PROTOCOL_KEYS = {
    "task",
    "preset",
    "train.epochs",
    "train.max_steps",
    "train.batch_size",
    "train.grad_accum",
    "train.init_sft_epochs",
    "train.init_lr",
    "train.spike_factor",
    "num_processes",
    "init",
    "task_digest",
}
_PROTOCOL_SECTIONS = ("model.", "data.", "eval.")

DESCRIBED_KEYS = {
    "task",
    "preset",
    "model.teacher",
    "model.student",
    "eval.decoding",
    "eval.seeds",
    "eval.max_new_tokens",
    "data.max_length",
    "data.max_prompt_length",
    "train.epochs",
    "train.max_steps",
    "train.batch_size",
    "train.grad_accum",
    "train.init_sft_epochs",
}
"""Protocol keys a section's description always shows; other keys are named when they differ between
sections."""


@dataclass
class Group:
    eval_set: str
    runs: list[Run]
    protocol: dict[str, str]
    settings: dict[str, str]
    """Non-protocol settings (json-encoded values), method.name included."""
    shown_settings: dict[str, Any] = field(default_factory=dict)
    """The settings that tell this group apart from other groups of the same method."""
    row: LeaderboardRow = field(init=False)

    @property
    def method(self) -> str:
        return str(self.runs[0].record.method)

    @property
    def label(self) -> str:
        extra = settings_text(self.shown_settings)
        return f"{self.method} ({extra})" if extra else self.method


@dataclass
class Section:
    eval_set: str
    protocol: dict[str, Any]
    """The shared settings, decoded."""
    description: str
    metrics: list[str]
    groups: list[Group]
    baseline: str | None
    varying: list[str] = field(default_factory=list)
    """Protocol keys whose values differ between the sections of one leaderboard."""
    notes: list[str] = field(default_factory=list)
    references: list[LeaderboardRow] = field(default_factory=list)
    """Reference rows: teacher, raw and init student, floors."""
    floor_verdict: str | None = None
    """Whether the best method beats every floor on the first metric."""
    missing: list[str] = field(default_factory=list)
    """--metric names that no run of this section recorded (records older than the metric)."""

    @property
    def methods(self) -> list[LeaderboardRow]:
        """The method rows, in sort order."""
        return [g.row for g in self.groups]

    @property
    def rows(self) -> list[LeaderboardRow]:
        """Reference rows first, then the method rows."""
        return [*self.references, *self.methods]

    @property
    def baseline_group(self) -> Group | None:
        """The group every method is compared with, if the section has one."""
        return next((g for g in self.groups if g.row.is_baseline), None)


def is_protocol(key: str) -> bool:
    return key in _PROTOCOL_KEYS or key.startswith(_PROTOCOL_SECTIONS)


def init_key(record: RunRecord) -> str | None:
    """The cache key of the SFT warm start the run began from; None without one (or an older record)."""
    init = record.init
    return init.get("key") if init.get("enabled") else None


def check_sort(sort: str) -> None:
    if sort not in SORT_NAMES:
        raise UserError(
            f"--sort {sort!r} is not one of {', '.join(SORT_NAMES)}{did_you_mean(sort, SORT_NAMES)}"
        )


def _main_metric(records: list[RunRecord], eval_set: str) -> str:
    record = records[0]
    names = list(record.metrics[eval_set].get("after", {}).get("metrics", {}))
    return record.main_metric if record.main_metric in names or not names else names[0]


def _mean(values: list[float]) -> float | None:
    stats = mean_std(values)
    return stats.mean if stats else None


def _mean_figures(figures: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Key-wise mean of the finite degeneracy figures that are present; None when none is."""
    present = [f for f in figures if f]
    keys = dict.fromkeys(k for f in present for k in f)
    means = {k: _mean([f[k] for f in present if is_finite(f.get(k))]) for k in keys}
    return {k: m for k, m in means.items() if m is not None} or None


def _summary(group: Group, metric: str) -> MetricSummary:
    """Mean, std and n over the runs' finite values of `metric`; `values` lists every run's value."""
    runs, eval_set = group.runs, group.eval_set
    after = [v for r in runs if (v := r.after_metric(eval_set, metric)) is not None]
    stats = mean_std([v for v in after if is_finite(v)])
    eval_seed_spread = [
        v
        for r in runs
        if len(r.after(eval_set).get("per_seed") or {}) > 1
        and is_finite(v := (r.after(eval_set).get("std_over_eval_seeds") or {}).get(metric))
    ]
    return MetricSummary(
        mean=stats.mean if stats else None,
        std=stats.std if stats else None,
        n=stats.n if stats else 0,
        values=after,
        eval_seed_std=_mean(eval_seed_spread),
    )


def _context(record: RunRecord, eval_set: str, description: str, protocol: dict[str, Any]) -> RowContext:
    model = record.config["model"]
    return RowContext(record.task, eval_set, model["teacher"], model["student"], description, protocol)


def _method_row(group: Group, metrics: list[str], context: RowContext) -> LeaderboardRow:
    runs = group.runs
    final_loss = mean_std(values_at(runs, "training.final_loss"))
    spikes = values_at(runs, "training.loss_spikes")
    cvs = [r.grad_norm_cv for r in runs if r.grad_norm_cv is not None]
    return LeaderboardRow(
        kind="method",
        label=group.label,
        context=context,
        n=len(runs),
        metrics={m: _summary(group, m) for m in metrics},
        degeneracy=_mean_figures([r.after(group.eval_set).get("degeneracy") for r in runs]),
        method=group.method,
        metric=metrics[0],
        settings=group.shown_settings,
        seeds=sorted(r.seed for r in runs),
        run_ids=sorted(str(r.record.run_id) for r in runs),
        final_loss=final_loss.mean if final_loss else None,
        final_loss_std=final_loss.std if final_loss else None,
        loss_spikes=spikes,
        loss_spikes_per_run=_mean(spikes),
        grad_norm_cv=_mean(cvs),
        grad_norm_max=max(values_at(runs, "training.grad_norm_max"), default=None),
        diverged=sum(bool(r.record.training.get("diverged")) for r in runs),
        tar_mean=_mean(values_at(runs, "training.tar_mean")),
        train_tokens_per_s=_mean(values_at(runs, "timings.train_tokens_per_s")),
        wall_min=(_mean(values_at(runs, "timings.wall_s")) or 0.0) / 60,
        wall_s_total=sum(values_at(runs, "timings.wall_s")),
    )


def _paired(seeds: list[int], base_seeds: list[int]) -> bool:
    """Training seeds pair up when both groups ran exactly the same seeds, each once."""
    return sorted(seeds) == sorted(base_seeds) and len(set(seeds)) == len(seeds)


def _finite_runs(group: Group, metric: str) -> list[Run]:
    """The group's runs whose value of `metric` after training is finite."""
    return [r for r in group.runs if is_finite(r.after_metric(group.eval_set, metric))]


def prompt_bootstrap(group: Group, base: Group, metric: str) -> BootstrapCI | None:
    """Paired bootstrap of group - base on `metric` over the prompts every run of both with a finite
    value has scored; training seeds are paired when both groups ran exactly the same seeds. None
    without samples."""
    runs, base_runs = _finite_runs(group, metric), _finite_runs(base, metric)
    scores = {id(r): r.prompt_scores(group.eval_set, metric) for r in runs + base_runs}
    if not runs or not base_runs or any(s is None for s in scores.values()):
        return None
    common = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not common:
        return None
    paired = _paired([r.seed for r in runs], [r.seed for r in base_runs])

    def matrix(runs: list[Run]) -> np.ndarray:
        ordered = sorted(runs, key=lambda r: r.seed) if paired else runs
        return np.array([[scores[id(r)][i] for i in common] for r in ordered])

    return paired_bootstrap(matrix(runs), matrix(base_runs), seeds_paired=paired)


def seed_values(group: Group, metric: str) -> list[tuple[int, float]]:
    """(training seed, finite run-level metric after training), in seed order."""
    runs = sorted(_finite_runs(group, metric), key=lambda r: r.seed)
    return [(r.seed, r.after_metric(group.eval_set, metric)) for r in runs]


def _compare_seeds(groups: list[Group], base: Group, metric: str) -> dict[int, SeedComparison]:
    """Seed-level comparison of each group with the baseline on `metric`, Holm-corrected over the groups
    (one family); keyed by id(group), absent for groups without values."""
    base_values = seed_values(base, metric)
    members = [(g, values) for g in groups if (values := seed_values(g, metric)) and base_values]
    family = [
        (
            [v for _, v in values],
            [v for _, v in base_values],
            _paired([s for s, _ in values], [s for s, _ in base_values]),
        )
        for _, values in members
    ]
    return {id(g): c for (g, _), c in zip(members, compare_family(family), strict=True)}


def pick_baseline(groups: list[Group], baseline: str) -> Group | None:
    candidates = [g for g in groups if g.method == baseline]
    return min(candidates, key=lambda g: (len(g.shown_settings), -len(g.runs)), default=None)


def _reference_summaries(record: RunRecord, eval_set: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(source, label) -> the SUMMARY (or floor) of each reference row a record holds for eval_set."""
    per_set = record.metrics[eval_set]
    reference = per_set.get("reference", {})
    before = per_set.get("before", {})
    found = {
        ("teacher", "teacher"): reference.get("teacher"),
        ("raw", "raw student"): before.get("raw"),
        ("init", "init student"): before.get("init"),
    }
    for name, floor in reference.get("floors", {}).items():
        found[("floor", _floor_label(name, floor))] = floor
    return {k: v for k, v in found.items() if v}


def _floor_label(name: str, floor: dict[str, Any]) -> str:
    if name != "constant":
        return f"floor: {name.replace('_', ' ')}"
    text = floor.get("output", "")
    return f"floor: constant {text if len(text) <= 30 else text[:27] + '...'!r}"


def _references(
    runs: list[Run], eval_set: str, metrics: list[str], context: RowContext
) -> list[LeaderboardRow]:
    """Reference rows of a section: the mean over its runs of each one's recorded figures."""
    by_row: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for key, summary in _reference_summaries(run.record, eval_set).items():
            by_row[key].append(summary)
    rows = []
    for (source, label), summaries in by_row.items():
        values = {m: [v for s in summaries if is_finite(v := s.get("metrics", {}).get(m))] for m in metrics}
        differ = any(len(set(v)) > 1 for v in values.values())
        rows.append(
            LeaderboardRow(
                kind="reference",
                label=f"{label} (mean of {len(summaries)})" if differ else label,
                context=context,
                n=len(summaries),
                metrics={m: MetricSummary(_mean(v), None, len(v)) for m, v in values.items()},
                degeneracy=_mean_figures([s.get("degeneracy") for s in summaries]),
                source=source,
            )
        )
    return rows


def _floor_verdict(section: Section) -> str | None:
    """Does the best method beat every floor on the section's first metric? None without floors."""
    m = section.metrics[0]
    sign = better(m).sign
    floors = [r for r in section.references if r.source == "floor" and is_finite(r.mean(m))]
    best = best_row(section.methods, m)
    if not floors or best is None:
        return None
    value, digits = best.mean(m), metric_digits(m)
    unbeaten = [f for f in floors if sign * value <= sign * f.mean(m)]
    head = f"best method {best.label} ({m} {value:.{digits}f})"
    if not unbeaten:
        top = best_row(floors, m)
        return f"{head} beats every floor (best floor: {top.label} {top.mean(m):.{digits}f})"
    return f"{head} does not beat floor: " + ", ".join(f"{f.label} {f.mean(m):.{digits}f}" for f in unbeaten)


def _init_text(record: RunRecord, epochs: Any) -> str:
    """The SFT warm start a section's runs began from."""
    init = record.init
    if init is None:  # records older than the init block
        return f"SFT warm start {epochs} epoch(s)"
    key = init_key(record)
    if key is None:
        return "no SFT warm start"
    plan, training = init.get("plan", {}), init.get("training", {})
    return (
        f"init {key[:8]}: {training.get('steps', plan.get('steps'))} SFT steps on {plan.get('rows')} rows, "
        f"lr {plan.get('lr')}, final loss {number(training.get('final_loss'), 3)}"
    )


def _describe(protocol: dict[str, Any], runs: list[Run], eval_set: str, varying: list[str]) -> str:
    """One line: what every row of a section shares (decoding, eval seeds, sizes, start point)."""
    p = protocol
    data = runs[0].record.data
    if p["eval.decoding"] == "greedy":
        decoding = "greedy"
    else:
        decoding = (
            f"sampling (T={p['eval.temperature']}, top-p {p['eval.top_p']}, top-k {p['eval.top_k']}, "
            f"no-repeat {p['eval.no_repeat_ngram_size']})"
        )
    budget = f"{p['train.max_steps']} steps" if p["train.max_steps"] else f"{p['train.epochs']} epoch(s)"
    steps = max(values_at(runs, "training.steps"), default=0)
    parts = [
        p["task"] if p["task"] == eval_set else f"trained on {p['task']}, evaluated on {eval_set}",
        f"teacher {p['model.teacher']} → student {p['model.student']}",
        f"preset {p['preset']}",
        f"{decoding}, {p['eval.max_new_tokens']} new tokens, eval seeds {runs[0].record.seeds.get('eval')}",
        f"{data.get('n_train', p['data.max_train_examples'])} train rows, "
        f"{data.get('n_eval', p['data.max_eval_examples'])} eval rows, "
        f"≤{p['data.max_length']} tokens (prompt ≤{p['data.max_prompt_length']})",
        f"{budget}, batch {p['train.batch_size']}×{p['train.grad_accum']}, {steps:.0f} steps",
        _init_text(runs[0].record, p["train.init_sft_epochs"]),
    ]
    distinct = ", ".join(f"{k}={json.dumps(p.get(k))}" for k in varying if k not in DESCRIBED_KEYS)
    return " · ".join(parts + ([f"where {distinct}"] if distinct else []))


def _shown_metrics(runs: list[Run], eval_set: str, metrics: list[str] | None) -> list[str]:
    """--metric's names where recorded; by default the main metric and the recorded fidelity metrics."""
    available = {m for r in runs for m in r.after(eval_set).get("metrics", {})}
    if metrics:
        return [m for m in metrics if m in available]
    main = _main_metric([r.record for r in runs], eval_set)
    return list(dict.fromkeys([main, *(m for m in FIDELITY_METRICS if m in available)]))


def _name_settings(groups: list[Group]) -> None:
    """Show, per method, the settings that tell its groups apart."""
    per_method: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        per_method[g.method].append(g)
    for same in per_method.values():
        keys = sorted({k for g in same for k in g.settings})
        differ = [k for k in keys if len({g.settings.get(k) for g in same}) > 1 and k != "method.name"]
        for g in same:
            g.shown_settings = {k: json.loads(g.settings[k]) for k in differ if k in g.settings}


def _compare_with_baseline(section: Section, baseline: str) -> None:
    """Δ rows: seed-level t-tests (one Holm family per metric) and the prompt bootstrap for context."""
    groups = section.groups
    base = pick_baseline(groups, baseline)
    if base is None:
        section.notes.append(f"no {baseline} runs for {section.eval_set} under this protocol: no Δ column")
        return
    others = [g for g in groups if g is not base]
    base.row.is_baseline = True
    for m in section.metrics:
        seeds = _compare_seeds(others, base, m)
        base.row.delta[m] = base.row.prompt_bootstrap[m] = None
        for g in others:
            g.row.baseline = base.label
            g.row.delta[m] = seeds.get(id(g))
            g.row.prompt_bootstrap[m] = prompt_bootstrap(g, base, m)


def _once_per_seed(group: Group) -> list[str]:
    """Keep one run per training seed in the group (the newest by created time, then the last by run id):
    the runs share every result setting, so a rerun is the same seed again, not another seed. Returns a
    note naming each seed's duplicates."""
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for run in group.runs:
        by_seed[run.seed].append(run)
    notes = []
    for seed, runs in by_seed.items():
        runs.sort(key=lambda r: (created_at(r.record), str(r.record.run_id)), reverse=True)
        if len(runs) > 1:
            ids = ", ".join(sorted(str(r.record.run_id) for r in runs))
            notes.append(
                f"runs {ids} ran the same config with seed {seed}: counted once, "
                f"as the newest ({runs[0].record.run_id})"
            )
    group.runs = [runs[0] for runs in by_seed.values()]
    return notes


def _non_finite_notes(runs: list[Run], eval_set: str, metrics: list[str]) -> list[str]:
    """A note for each metric value of a run (after training, or of a reference row) that is NaN or
    infinite: it is listed for the run but left out of means, std, tests, intervals and the floor
    verdict."""
    notes = []
    for run in runs:
        references = _reference_summaries(run.record, eval_set)
        found = {"after training": run.after(eval_set)} | {label: s for (_, label), s in references.items()}
        for where, summary in found.items():
            values = summary.get("metrics") or {}
            notes += [
                f"run {run.record.run_id}: {eval_set} {m} {where} is {values[m]}; left out of means, std, "
                "tests, intervals and the floor verdict"
                for m in metrics
                if m in values and values[m] is not None and not is_finite(values[m])
            ]
    return notes


def _sort(groups: list[Group], sort: str, metric: str) -> list[Group]:
    """Groups by the --sort column, best first by its direction (ascending without one); rows without a
    value last."""
    column = sort_column(sort, metric)
    key = column.sort_value or column.value
    present = [g for g in groups if key(g.row) is not None]
    missing = [g for g in groups if key(g.row) is None]
    return sorted(present, key=lambda g: key(g.row), reverse=column.better is Better.HIGHER) + missing


def _section(
    groups: list[Group],
    metrics: list[str] | None,
    baseline: str | None,
    methods: list[str],
    sort: str,
    varying: list[str],
) -> Section:
    """One protocol's groups; `varying`: protocol keys that differ between sections, named in the
    description so that two sections never read alike."""
    eval_set = groups[0].eval_set
    notes = [note for g in groups for note in _once_per_seed(g)]
    runs = [r for g in groups for r in g.runs]
    shown = _shown_metrics(runs, eval_set, metrics)
    _name_settings(groups)
    protocol = {k: json.loads(v) for k, v in groups[0].protocol.items()}
    description = _describe(protocol, runs, eval_set, varying)
    section = Section(eval_set, protocol, description, shown, groups, baseline, varying, notes)
    section.missing = [m for m in metrics or [] if m not in shown]
    if not shown:
        section.groups = []
        return section
    recorded = sorted({m for r in runs for m in r.after(eval_set).get("metrics", {})})
    every = list(dict.fromkeys([*shown, *recorded]))  # rows carry every metric; columns show `shown`
    context = _context(runs[0].record, eval_set, description, protocol)
    section.references = _references(runs, eval_set, every, context)
    for g in groups:
        g.row = _method_row(g, every, context)
    section.notes += _non_finite_notes(runs, eval_set, every)
    if baseline:
        _compare_with_baseline(section, baseline)
    section.notes += dict.fromkeys(problem for r in runs for problem in r.problems)
    kept = [g for g in groups if not methods or g.method in methods]
    section.groups = _sort(kept, sort, shown[0])
    section.floor_verdict = _floor_verdict(section)
    return section


def sections_of(
    grouped: dict[tuple[str, str], list[Run]],
    *,
    metrics: list[str] | None,
    baseline: str | None,
    methods: list[str],
    sort: str,
) -> list[Section]:
    """Sections of the runs grouped by (eval set, json of their settings): aggregated, compared with the
    baseline and sorted; `methods` (when given) keeps those methods' rows, after the baseline is found."""
    by_section: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for (eval_set, key), runs in grouped.items():
        settings = json.loads(key)
        protocol = {k: v for k, v in settings.items() if is_protocol(k)}
        rest = {k: v for k, v in settings.items() if not is_protocol(k)}
        by_section[(eval_set, json.dumps(protocol, sort_keys=True))].append(
            Group(eval_set, runs, protocol, rest)
        )
    known = {
        m
        for g in grouped.values()
        for r in g
        for per_set in r.record.metrics.values()
        for m in per_set.get("after", {}).get("metrics", {})
    }
    recorded = [m for m in metrics or [] if m in known]
    for name in metrics or []:  # a fidelity metric older records lack is left out while others show
        if name not in known and not (name in FIDELITY_METRICS and recorded):
            hint = did_you_mean(name, known)
            raise UserError(f"--metric {name!r} is in no record{hint}; known: {', '.join(sorted(known))}")
    protocols = [json.loads(key) for _, key in by_section]
    varying = sorted(k for k in set().union(*protocols) if len({p.get(k) for p in protocols}) > 1)
    sections = [
        _section(members, metrics, baseline, methods, sort, varying) for members in by_section.values()
    ]
    sections = [s for s in sections if s.groups]
    sections.sort(key=lambda s: (s.eval_set, s.description))
    return sections
