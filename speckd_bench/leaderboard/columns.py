"""The leaderboard's columns, each declared once: its table header, CSV name, value, cell text, legend,
direction, `--sort` name and whether reference rows fill it. The tables (rich, md, latex, html, the
results README and HTML page), the CSV, the sorts and the best marks all read these declarations.

A `Column` is one column of every section; a `MetricColumn` is repeated for each shown metric and bound
to it (and to the section's baseline) with `bind`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from speckd_bench.api.metrics import Better, better
from speckd_bench.evaluation.degeneracy import MAX_EMPTY, MAX_REPETITION, MIN_DISTINCT_2
from speckd_bench.formatting import NO_VALUE, mean_std, number, settings_text, signed_interval
from speckd_bench.leaderboard.rows import LeaderboardRow
from speckd_bench.leaderboard.stats import ALPHA, CONFIDENCE, MIN_SEEDS_SIGNIFICANT, RESAMPLES

SIGNIFICANT = "†"
DEGENERATE = "⚠ degenerate"
LOWER = "↓"

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

    def bind(self, metric: str, baseline: str | None) -> Column:
        """This column for `metric` in a section compared with `baseline`."""
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
        )


def _delta_field(name: str) -> Callable[[LeaderboardRow, str], Any]:
    return lambda r, m: getattr(d, name) if (d := r.delta.get(m)) else None


def _bootstrap_field(name: str) -> Callable[[LeaderboardRow, str], Any]:
    return lambda r, m: getattr(ci, name) if (ci := r.prompt_bootstrap.get(m)) else None


def _delta_text(row: LeaderboardRow, metric: str) -> str:
    delta = row.delta.get(metric)
    if delta is None:
        return "baseline" if row.is_baseline else NO_VALUE
    if delta.low is None:
        few = min(delta.n, delta.n_base) < 2
        why = f"n={delta.n} vs {delta.n_base}" if few else "no seed-to-seed variation"
        return f"{delta.diff:+.2f} (no interval: {why})"
    mark = f" {SIGNIFICANT}" if delta.significant else ""
    return signed_interval(delta.diff, delta.low, delta.high) + mark


def _bootstrap_text(row: LeaderboardRow, metric: str) -> str:
    ci = row.prompt_bootstrap.get(metric)
    return signed_interval(ci.diff, ci.low, ci.high) if ci else NO_VALUE


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


METHOD = Column(
    "method",
    "method",
    _name,
    text=_name,
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
    text=lambda r, m: mean_std(r.metrics[m].mean, r.metrics[m].std),
    legend="mean ± std over training seeds (sample std);",
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
    text=lambda r, m: number(r.metrics[m].eval_seed_std, 2),
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
    legend="empty % = share of empty outputs,",
    reference=True,
    shown=_any_degeneracy,
)
DISTINCT_1 = Column(None, "distinct_1", _figure("distinct_1"))
DISTINCT_2 = Column(
    "distinct-2",
    "distinct_2",
    _figure("distinct_2"),
    legend="distinct-2 = distinct word bigrams / word bigrams,",
    reference=True,
    shown=_any_degeneracy,
)
REPETITION = Column(
    "rep",
    "repetition",
    _figure("repetition"),
    legend="rep = share of repeated 4-grams within an output (mean over outputs);",
    reference=True,
    shown=_any_degeneracy,
)
DEGENERATE_REASONS = Column(
    "degenerate",
    "degenerate",
    lambda r: "; ".join(r.degenerate),
    text=lambda r: f"{DEGENERATE}: {', '.join(r.degenerate)}" if r.degenerate else NO_VALUE,
    legend=(
        f"{DEGENERATE} when empty > {MAX_EMPTY:.0%}, distinct-2 < {MIN_DISTINCT_2} or rep > {MAX_REPETITION}."
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
)
FINAL_LOSS_STD = Column(
    "final-loss sd (seeds)",
    "final_loss_std",
    lambda r: r.final_loss_std,
    digits=3,
    legend="final-loss sd: its std across seeds.",
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
)
GRAD_NORM_CV = Column(
    "grad-norm CV",
    "grad_norm_cv",
    lambda r: r.grad_norm_cv,
    legend="Grad-norm CV: std/mean of the gradient norm over the steps of a run, mean over runs.",
    better=Better.LOWER,
    sort="grad_cv",
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
)
TOKENS_PER_S = Column(
    "train tok/s",
    "train_tokens_per_s",
    lambda r: r.train_tokens_per_s,
    digits=0,
    better=Better.HIGHER,
    sort="tok_s",
)
WALL_MIN = Column(
    "wall min",
    "wall_min",
    lambda r: r.wall_min,
    digits=1,
    legend="Wall min: per run, mean.",
    better=Better.LOWER,
    sort="wall",
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

LEGEND = " ".join(
    [
        MEAN.legend,
        N.legend,
        f"{LOWER}: lower is better.",
        DELTA.legend,
        BOOTSTRAP.legend,
        "Bold: best value of a metric column among the methods of its section.",
        "Reference rows (italic, first in a section; no Δ, no stability): teacher; raw student and init "
        "student (after the SFT warm start) before training; floors: empty output, one constant text (the "
        "candidate scoring best on the train references), echo of the instruction / input; mean over the "
        "section's runs where these differ.",
        "Degeneracy of the outputs:",
        *(c.legend for c in (EMPTY, DISTINCT_2, REPETITION, DEGENERATE_REASONS)),
        *(c.legend for c in (SPIKES, GRAD_NORM_CV, FINAL_LOSS, FINAL_LOSS_STD, DIVERGED, TAR, WALL_MIN)),
    ]
)
"""What the tables' columns and marks mean, printed under every table."""


def columns(metrics: list[str], baseline: str | None) -> list[Column]:
    """Every column of a section with these metrics, compared with `baseline`."""
    return [*HEAD, *(c.bind(m, baseline) for m in metrics for c in PER_METRIC), *TAIL]


def table_columns(metrics: list[str], baseline: str | None, methods: Rows, references: Rows) -> list[Column]:
    """The columns a section's table shows."""
    return [c for c in columns(metrics, baseline) if c.header is not None and c.shown(methods, references)]


def sort_column(sort: str, metric: str) -> Column:
    """The column --sort `sort` orders by, the per-metric ones taken for `metric`."""
    return next(c for c in columns([metric], None) if c.sort == sort)
