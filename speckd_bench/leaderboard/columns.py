"""The leaderboard's columns, each declared once: its table header, CSV name, value, cell text, legend,
direction, `--sort` name, column group and whether reference rows fill it. The tables (rich, md, latex,
html, the results README and HTML page), the CSV, the sorts and the best marks all read these declarations.

A `Column` is one column of every section; a `MetricColumn` is repeated for each shown metric and bound
to it (and to the section's baseline) with `bind`. The tables show the core group (method, main metric
with its Δ, health flags) and the groups asked for (`--columns`); the CSV and JSON hold every column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from speckd_bench.api.metrics import FIDELITY, FIDELITY_METRICS, Better, better
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.evaluation.degeneracy import MAX_EMPTY, MAX_REPETITION, MIN_DISTINCT_2
from speckd_bench.evaluation.floors import TOKEN_FLOORS
from speckd_bench.formatting import (
    NO_VALUE,
    mean_std,
    metric_digits,
    number,
    settings_text,
    signed_interval,
)
from speckd_bench.leaderboard.rows import LeaderboardRow
from speckd_bench.leaderboard.stats import ALPHA, CONFIDENCE, MIN_SEEDS_SIGNIFICANT, RESAMPLES

SIGNIFICANT = "†"
DEGENERATE = "⚠ degenerate"
LOWER = "↓"

CORE = "core"
"""The group every table shows: method, settings, n, the main metric with its Δ, degenerate, diverged."""
GROUPS = (CORE, "fidelity", "text", "intervals", "degeneracy", "stability", "timing", "lm-eval")
"""The column groups, in table order of their first column: fidelity and text are the other shown
metrics (teacher-forced fidelity, task scores) with their Δ; intervals the prompt bootstrap and the
eval-seed spread."""

Rows = list[LeaderboardRow]
Shown = Callable[[Rows, Rows], bool]
"""Whether a section's table shows a column, given its method rows and its reference rows."""


def _always(methods: Rows, references: Rows) -> bool:
    return True


@dataclass(frozen=True)
class Column:
    header: str | None
    """Table header; None: the CSV alone has this column."""
    csv: str | None
    """CSV name; None: the tables alone have this column."""
    value: Callable[[LeaderboardRow], Any]
    """The raw value: the CSV cell, and the number ranked by best marks and sorts (None: no value)."""
    text: Callable[[LeaderboardRow], str] | None = None
    """The table cell; by default the value × `scale` with `digits` decimals."""
    digits: int = 2
    scale: float = 1.0
    legend: str | None = None
    better: Better | None = None
    """Which way the column improves; sorting by it puts the best first (the lowest without one)."""
    sort: str | None = None
    """The --sort name that orders a section's rows by this column."""
    sort_value: Callable[[LeaderboardRow], Any] | None = None
    """What --sort compares where it is not the value."""
    marks_best: bool = False
    """The best value among a section's methods is marked (bold)."""
    reference: bool = False
    """Reference rows fill this column (else it stays empty for them)."""
    shown: Shown = _always
    group: str = CORE
    """The column group (GROUPS) that shows it in a table."""
    metric: str | None = None
    """The metric a bound MetricColumn shows."""

    def cell(self, row: LeaderboardRow) -> str:
        if self.text is not None:
            return self.text(row)
        value = self.value(row)
        return number(None if value is None else value * self.scale, self.digits)


@dataclass(frozen=True)
class MetricColumn:
    """A column repeated for each shown metric: the header is a template of {metric}, {arrow} (the
    lower-is-better mark) and {baseline}; the CSV name is prefixed with the metric's name."""

    header: str | None
    csv: str | None
    value: Callable[[LeaderboardRow, str], Any]
    text: Callable[[LeaderboardRow, str], str] | None = None
    legend: str | None = None
    ranked: bool = False
    """The column improves the way its metric does."""
    sort: str | None = None
    marks_best: bool = False
    reference: bool = False
    shown: Callable[[Rows, Rows, str], bool] = lambda methods, references, metric: True
    group: str | None = None
    """None: the metric's own group (core for the main metric, else fidelity or text)."""

    def bind(self, metric: str, baseline: str | None, main: bool = True) -> Column:
        """This column for `metric` (the section's first, judged one when `main`) in a section compared
        with `baseline`."""
        own = CORE if main else "fidelity" if metric in FIDELITY_METRICS else "text"
        arrow = f" {LOWER}" if better(metric) is Better.LOWER else ""
        text = self.text
        return Column(
            header=None
            if self.header is None
            else self.header.format(metric=metric, arrow=arrow, baseline=baseline),
            csv=None if self.csv is None else f"{metric}_{self.csv}",
            value=lambda r: self.value(r, metric) if metric in r.metrics else None,
            text=None if text is None else lambda r: text(r, metric),
            legend=self.legend,
            better=better(metric) if self.ranked else None,
            sort=self.sort,
            marks_best=self.marks_best,
            reference=self.reference,
            shown=lambda methods, references: self.shown(methods, references, metric),
            group=self.group or own,
            metric=metric,
        )


def _delta_field(name: str) -> Callable[[LeaderboardRow, str], Any]:
    return lambda r, m: getattr(d, name) if (d := r.delta.get(m)) else None


def _bootstrap_field(name: str) -> Callable[[LeaderboardRow, str], Any]:
    return lambda r, m: getattr(ci, name) if (ci := r.prompt_bootstrap.get(m)) else None


def _delta_text(row: LeaderboardRow, metric: str) -> str:
    delta, digits = row.delta.get(metric), metric_digits(metric)
    if delta is None:
        return "baseline" if row.is_baseline else NO_VALUE
    if delta.low is None:
        few = min(delta.n, delta.n_base) < 2
        why = f"n={delta.n} vs {delta.n_base}" if few else "no seed-to-seed variation"
        return f"{delta.diff:+.{digits}f} (no interval: {why})"
    mark = f" {SIGNIFICANT}" if delta.significant else ""
    return signed_interval(delta.diff, delta.low, delta.high, digits) + mark


def _bootstrap_text(row: LeaderboardRow, metric: str) -> str:
    ci = row.prompt_bootstrap.get(metric)
    return signed_interval(ci.diff, ci.low, ci.high, metric_digits(metric)) if ci else NO_VALUE


def _figure(name: str) -> Callable[[LeaderboardRow], float | None]:
    return lambda r: r.degeneracy.get(name) if r.degeneracy else None


def _any_degeneracy(methods: Rows, references: Rows) -> bool:
    return any(r.degeneracy for r in [*references, *methods])


# one column of every section, in table and CSV order
KIND = Column(None, "kind", lambda r: r.kind)
EVAL_SET = Column(None, "eval_set", lambda r: r.context.eval_set)
TASK = Column(None, "task", lambda r: r.context.task)
TEACHER = Column(None, "teacher", lambda r: r.context.teacher)
STUDENT = Column(None, "student", lambda r: r.context.student)


def _name(row: LeaderboardRow) -> str:
    """A reference row's label, a method row's method (its settings have their own column)."""
    return row.label if row.is_reference else str(row.method)


_TOKEN_FLOORS = "; ".join(f"floor: {kind} tokens, {what}" for kind, what in TOKEN_FLOORS.items())
REFERENCE_LEGEND = (
    "Reference rows (italic, first in a section; no Δ, no stability): teacher; raw student and init student "
    "(after the SFT warm start) before training; floors: empty output, one constant text (the candidate "
    "scoring best on the train references), echo of each prompt field (and of all of them together); in the "
    f"teacher-forced fidelity columns (tf_*) only, the token floors, which need no model ({_TOKEN_FLOORS}: "
    "the unigram floor's top-1 is one constant token); mean over the section's runs where these differ."
)
FIDELITY_LEGEND = (
    "Fidelity to the teacher: "
    + "; ".join(f"{m.name}: {m.description}" for m in FIDELITY)
    + ". The tf_* columns' floors are the token floor rows (floor: unigram tokens, floor: bigram tokens)."
)
"""Added to the legend of a table that shows a fidelity metric."""

METHOD = Column(
    "method",
    "method",
    _name,
    text=_name,
    legend=REFERENCE_LEGEND,
    sort="method",
    sort_value=lambda r: r.label,
    reference=True,
)
SETTINGS = Column(
    "settings",
    "settings",
    lambda r: json.dumps(r.settings) if r.settings else None,
    text=lambda r: settings_text(r.settings) or NO_VALUE,
    shown=lambda methods, references: any(r.settings for r in methods),
)
N = Column("n", "n_seeds", lambda r: r.n, text=lambda r: str(r.n), legend="n = training seeds;")
SEEDS = Column(None, "seeds", lambda r: " ".join(map(str, r.seeds)))

MEAN = MetricColumn(
    "{metric}{arrow} (mean ± std)",
    "mean",
    lambda r, m: r.metrics[m].mean,
    text=lambda r, m: mean_std(r.metrics[m].mean, r.metrics[m].std, metric_digits(m)),
    legend=(
        f"Metric columns: mean ± std over training seeds (sample std); {LOWER}: lower is better; bold: the "
        "best value of a metric column among the methods of its section."
    ),
    ranked=True,
    sort="metric",
    marks_best=True,
    reference=True,
)
STD = MetricColumn(None, "std", lambda r, m: r.metrics[m].std)
EVAL_SEED_STD = MetricColumn(
    "{metric} eval-seed sd",
    "eval_seed_std",
    lambda r, m: r.metrics[m].eval_seed_std,
    text=lambda r, m: number(r.metrics[m].eval_seed_std, metric_digits(m)),
    legend="Eval-seed sd: the std over a run's eval seeds, mean over the runs with several.",
    group="intervals",
    shown=lambda methods, references, m: any(r.metrics[m].eval_seed_std is not None for r in methods),
)
DELTA = MetricColumn(
    "Δ {metric} vs {baseline} [seed t-CI, Holm]",
    "delta",
    _delta_field("diff"),
    text=_delta_text,
    legend=(
        "Δ: difference to the baseline's mean, with a t-interval over training seeds (the run-level metric): "
        "paired t on the per-seed differences when both ran the same seeds, else Welch's t; none with fewer "
        "than 2 seeds on a side or no seed-to-seed variation. Holm correction per section and metric over "
        "the methods compared with the baseline: the comparison with the i-th smallest of m p-values gets a "
        f"t-interval at confidence 1 - {ALPHA:g}/(m - i + 1). {SIGNIFICANT}: Holm rejects at {ALPHA:g} and "
        f"both sides have ≥ {MIN_SEEDS_SIGNIFICANT} seeds."
    ),
    ranked=True,
    sort="delta",
    shown=lambda methods, references, m: any(r.is_baseline for r in methods),
)
DELTA_DETAILS = [
    MetricColumn(None, f"delta_{name}", _delta_field(name))
    for name in ("low", "high", "p", "p_holm", "significant")
]
BOOTSTRAP = MetricColumn(
    f"Δ {{metric}} prompt-bootstrap CI [{CONFIDENCE:.0%}]",
    None,
    _bootstrap_field("diff"),
    text=_bootstrap_text,
    legend=(
        f"Prompt-bootstrap CI: {CONFIDENCE:.0%} paired bootstrap ({RESAMPLES:,} resamples of the eval "
        "prompts and the training seeds), for context: it ignores the multiplicity and never marks "
        "significance."
    ),
    shown=lambda methods, references, m: any(r.prompt_bootstrap.get(m) for r in methods),
    group="intervals",
)
BOOTSTRAP_BOUNDS = [
    MetricColumn(None, f"bootstrap_{name}", _bootstrap_field(name)) for name in ("low", "high")
]

EMPTY = Column(
    "empty %",
    "empty",
    _figure("empty"),
    digits=0,
    scale=100,
    legend="Degeneracy of the outputs: empty % = share of empty outputs,",
    reference=True,
    shown=_any_degeneracy,
    group="degeneracy",
)
DISTINCT_1 = Column(None, "distinct_1", _figure("distinct_1"))
DISTINCT_2 = Column(
    "distinct-2",
    "distinct_2",
    _figure("distinct_2"),
    legend="distinct-2 = distinct word bigrams / word bigrams,",
    reference=True,
    shown=_any_degeneracy,
    group="degeneracy",
)
REPETITION = Column(
    "rep",
    "repetition",
    _figure("repetition"),
    legend="rep = share of repeated 4-grams within an output (mean over outputs).",
    reference=True,
    shown=_any_degeneracy,
    group="degeneracy",
)
DEGENERATE_REASONS = Column(
    "degenerate",
    "degenerate",
    lambda r: "; ".join(r.degenerate),
    text=lambda r: f"{DEGENERATE}: {', '.join(r.degenerate)}" if r.degenerate else NO_VALUE,
    legend=(
        f"{DEGENERATE} when the outputs are over {MAX_EMPTY:.0%} empty, their distinct-2 (distinct word "
        f"bigrams / word bigrams) is under {MIN_DISTINCT_2} or their rep (share of repeated 4-grams within "
        f"an output) over {MAX_REPETITION}."
    ),
    reference=True,
    shown=_any_degeneracy,
)
FINAL_LOSS = Column(
    "final loss",
    "final_loss",
    lambda r: r.final_loss,
    digits=3,
    legend=(
        "Final loss: mean over seeds (each method's own loss, so scales differ between methods and are not "
        "ranked);"
    ),
    group="stability",
)
FINAL_LOSS_STD = Column(
    "final-loss sd (seeds)",
    "final_loss_std",
    lambda r: r.final_loss_std,
    digits=3,
    legend="final-loss sd: its std across seeds.",
    group="stability",
)
SPIKES = Column(
    "spikes/run",
    "loss_spikes_per_run",
    lambda r: r.loss_spikes_per_run,
    digits=1,
    legend=(
        "Spikes/run: steps whose loss exceeds train.spike_factor × the median of the previous 10 steps, mean "
        "per run."
    ),
    better=Better.LOWER,
    sort="spikes",
    group="stability",
)
GRAD_NORM_CV = Column(
    "grad-norm CV",
    "grad_norm_cv",
    lambda r: r.grad_norm_cv,
    legend="Grad-norm CV: std/mean of the gradient norm over the steps of a run, mean over runs.",
    better=Better.LOWER,
    sort="grad_cv",
    group="stability",
)
DIVERGED = Column(
    "diverged",
    "diverged",
    lambda r: r.diverged,
    text=lambda r: f"{r.diverged}/{r.n}",
    legend="Diverged: runs stopped by a NaN/inf loss or gradient.",
    better=Better.LOWER,
    sort="diverged",
)
TAR = Column(
    "TAR",
    "tar_mean",
    lambda r: r.tar_mean,
    legend="TAR: SpecKD token acceptance rate, mean over steps and runs.",
    shown=lambda methods, references: any(r.tar_mean is not None for r in methods),
    group="stability",
)
TOKENS_PER_S = Column(
    "train tok/s",
    "train_tokens_per_s",
    lambda r: r.train_tokens_per_s,
    digits=0,
    legend="Train tok/s: training tokens per second, mean over runs;",
    better=Better.HIGHER,
    sort="tok_s",
    group="timing",
)
WALL_MIN = Column(
    "wall min",
    "wall_min",
    lambda r: r.wall_min,
    digits=1,
    legend="Wall min: per run, mean.",
    better=Better.LOWER,
    sort="wall",
    group="timing",
)
PROTOCOL = Column(None, "protocol", lambda r: r.context.protocol)

HEAD = (KIND, EVAL_SET, TASK, TEACHER, STUDENT, METHOD, SETTINGS, N, SEEDS)
"""The columns before the metrics."""
PER_METRIC = (MEAN, STD, EVAL_SEED_STD, DELTA, *DELTA_DETAILS, BOOTSTRAP, *BOOTSTRAP_BOUNDS)
"""The columns of each metric, in order."""
TAIL = (
    EMPTY,
    DISTINCT_1,
    DISTINCT_2,
    REPETITION,
    DEGENERATE_REASONS,
    FINAL_LOSS,
    FINAL_LOSS_STD,
    SPIKES,
    GRAD_NORM_CV,
    DIVERGED,
    TAR,
    TOKENS_PER_S,
    WALL_MIN,
    PROTOCOL,
)
"""The columns after the metrics: degeneracy of the outputs, training stability, cost."""

SORT_NAMES = tuple(c.sort for c in (*PER_METRIC, *HEAD, *TAIL) if c.sort)
"""The --sort names: the first metric, its Δ, then the columns of every section."""

LM_EVAL_LEGEND = (
    "lm-eval TASK METRIC: the lm-evaluation-harness score of the trained student (one per run, whatever the "
    "section's eval set), mean ± std over training seeds, on lm-eval's scale (0-100 for the speckd_ tasks)."
)


def lm_eval_column(name: str) -> Column:
    """The column of one lm-eval score ("task metric") of the method rows."""

    def summary(row: LeaderboardRow) -> Any:
        return row.lm_eval.get(name)

    return Column(
        f"lm-eval {name} (mean ± std)",
        f"lm_eval_{name}",
        lambda r: s.mean if (s := summary(r)) else None,
        text=lambda r: mean_std(s.mean, s.std) if (s := summary(r)) else NO_VALUE,
        legend=LM_EVAL_LEGEND,
        group="lm-eval",
    )


def lm_eval_names(rows: Rows) -> list[str]:
    """The lm-eval scores any of the rows holds, in the order first met."""
    return list(dict.fromkeys(name for r in rows for name in r.lm_eval))


def legend(cols: list[Column]) -> str:
    """What the shown columns and their marks mean, printed under the tables: each column's legend once,
    in column order, with the fidelity metrics' where one is shown."""
    sentences: list[str] = []
    for c in cols:
        sentences += [c.legend] if c.legend else []
        sentences += [FIDELITY_LEGEND] if c.metric in FIDELITY_METRICS else []
    return " ".join(dict.fromkeys(sentences))


def columns(metrics: list[str], baseline: str | None, lm_eval: list[str] | None = None) -> list[Column]:
    """Every column of a section with these metrics (the first one the main) and lm-eval scores, compared
    with `baseline`."""
    per_metric = [c.bind(m, baseline, main=i == 0) for i, m in enumerate(metrics) for c in PER_METRIC]
    return [*HEAD, *per_metric, *map(lm_eval_column, lm_eval or []), *TAIL]


def table_columns(
    metrics: list[str],
    baseline: str | None,
    methods: Rows,
    references: Rows,
    groups: tuple[str, ...] = (CORE,),
) -> list[Column]:
    """The columns a section's table shows: those of the core group and of `groups`."""
    cols = columns(metrics, baseline, lm_eval_names(methods))
    return [
        c
        for c in cols
        if c.header is not None and c.group in (CORE, *groups) and c.shown(methods, references)
    ]


def parse_groups(text: str | None, wide: bool = False) -> tuple[str, ...]:
    """The column groups of `--columns GROUP[,GROUP]` (every group with `--wide`; the core alone without
    either); an unknown group is a UserError that lists them."""
    if wide:
        return GROUPS
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for name in names:
        if name not in GROUPS:
            raise UserError(
                f"--columns {name!r} is not a column group{did_you_mean(name, GROUPS)}; groups: "
                f"{', '.join(GROUPS)} (or --wide for all)"
            )
    return tuple(dict.fromkeys([CORE, *names]))


def sort_column(sort: str, metric: str) -> Column:
    """The column --sort `sort` orders by, the per-metric ones taken for `metric`."""
    return next(c for c in columns([metric], None) if c.sort == sort)
