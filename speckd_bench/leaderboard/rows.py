"""The leaderboard row: one group of runs (a method's settings over training seeds) or one reference row
(teacher, raw and init student, a floor), typed; and its `--format json` layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from speckd_bench.api.metrics import better
from speckd_bench.evaluation.degeneracy import degenerate_reasons
from speckd_bench.leaderboard.runs import is_finite
from speckd_bench.leaderboard.stats import BootstrapCI, SeedComparison, mean_std


@dataclass(frozen=True)
class MetricSummary:
    """One metric of a row over its runs."""

    mean: float | None
    std: float | None
    """Sample std over training seeds; None for reference rows."""
    n: int
    """Runs that recorded the metric."""
    values: list[float] = field(default_factory=list)
    """Per run of a method row, after training."""
    eval_seed_std: float | None = None
    """Mean over the runs with several eval seeds of the std over those seeds."""


@dataclass(frozen=True)
class RowContext:
    """What every row of a section shares."""

    task: str
    eval_set: str
    teacher: str
    student: str
    protocol: str
    """The section's description line."""
    protocol_config: dict[str, Any]
    """The section's protocol settings, decoded."""


@dataclass
class LeaderboardRow:
    """A row of a section. Method rows carry every field; reference rows leave the seeds, stability,
    cost and baseline fields empty (None)."""

    kind: Literal["method", "reference"]
    label: str
    """The method with the settings that tell its groups apart, or the reference row's name."""
    context: RowContext
    n: int
    """Training seeds of a method row; runs averaged into a reference row."""
    metrics: dict[str, MetricSummary]
    """Every metric the section's runs recorded, the shown ones first."""
    degeneracy: dict[str, float] | None
    """Mean degeneracy figures of the outputs (empty, distinct_1, distinct_2, repetition), where recorded."""
    method: str | None = None
    source: str | None = None
    """Reference rows: teacher, raw, init or floor."""
    metric: str | None = None
    """Method rows: the section's first metric (sorted and judged by)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings that tell this group apart from the other groups of its method."""
    seeds: list[int] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    # stability
    final_loss: float | None = None
    final_loss_std: float | None = None
    loss_spikes: list[float] = field(default_factory=list)
    loss_spikes_per_run: float | None = None
    grad_norm_cv: float | None = None
    grad_norm_max: float | None = None
    diverged: int | None = None
    tar_mean: float | None = None
    # cost
    train_tokens_per_s: float | None = None
    wall_min: float | None = None
    wall_s_total: float | None = None
    # against the baseline
    is_baseline: bool = False
    baseline: str | None = None
    """Label of the group this row is compared with."""
    delta: dict[str, SeedComparison | None] = field(default_factory=dict)
    """Per shown metric: the seed-level comparison with the baseline (None: none possible); empty when the
    section has no baseline."""
    prompt_bootstrap: dict[str, BootstrapCI | None] = field(default_factory=dict)
    lm_eval: dict[str, MetricSummary] = field(default_factory=dict)
    """Method rows: each lm-evaluation-harness score ("task metric") the runs recorded, over the runs."""

    @property
    def is_reference(self) -> bool:
        return self.kind == "reference"

    @property
    def degenerate(self) -> list[str]:
        """Why the outputs count as degenerate (empty when they do not)."""
        return degenerate_reasons(self.degeneracy) if self.degeneracy else []

    def mean(self, metric: str) -> float | None:
        """The row's mean of `metric`; None when it has none."""
        summary = self.metrics.get(metric)
        return summary.mean if summary else None

    def as_json(self) -> dict[str, Any]:
        """The row as `table --format json` writes it."""
        c = self.context
        where = {"task": c.task, "eval_set": c.eval_set, "teacher": c.teacher, "student": c.student}
        tail = {
            "degeneracy": self.degeneracy,
            "degenerate": self.degenerate,
            "protocol": c.protocol,
            "protocol_config": c.protocol_config,
        }
        if self.is_reference:
            return {
                "kind": self.kind,
                "source": self.source,
                "label": self.label,
                **where,
                "method": self.method,
                "n_runs": self.n,
                "metrics": {m: {"mean": s.mean, "std": s.std, "n": s.n} for m, s in self.metrics.items()},
                **tail,
            }
        main = self.metrics[self.metric]
        return {
            "kind": self.kind,
            **where,
            "method": self.method,
            "label": self.label,
            "settings": self.settings,
            "metric": self.metric,
            "n_seeds": self.n,
            "seeds": self.seeds,
            "mean": main.mean,
            "std": main.std,
            "metrics": {
                m: {
                    "mean": s.mean,
                    "std": s.std,
                    "n": s.n,
                    "per_run": s.values,
                    "eval_seed_std": s.eval_seed_std,
                }
                for m, s in self.metrics.items()
            },
            "final_loss": self.final_loss,
            "final_loss_std": self.final_loss_std,
            "loss_spikes": self.loss_spikes,
            "loss_spikes_per_run": self.loss_spikes_per_run,
            "grad_norm_cv": self.grad_norm_cv,
            "grad_norm_max": self.grad_norm_max,
            "diverged": self.diverged,
            "tar_mean": self.tar_mean,
            "train_tokens_per_s": self.train_tokens_per_s,
            "wall_min": self.wall_min,
            "wall_s_total": self.wall_s_total,
            "run_ids": self.run_ids,
            "delta": {
                m: {"baseline": self.baseline, **asdict(d)} if d else None for m, d in self.delta.items()
            },
            "prompt_bootstrap": {m: asdict(ci) if ci else None for m, ci in self.prompt_bootstrap.items()},
            "lm_eval": {
                name: {"mean": s.mean, "std": s.std, "n": s.n, "per_run": s.values}
                for name, s in self.lm_eval.items()
            },
            "is_baseline": self.is_baseline,
            **tail,
        }


def best_row(rows: list[LeaderboardRow], metric: str) -> LeaderboardRow | None:
    """The row with the best finite mean of `metric` by the metric's declared direction; None when no row
    has one."""
    scored = [r for r in rows if is_finite(r.mean(metric))]
    return max(scored, key=lambda r: better(metric).sign * r.mean(metric), default=None)


def _lm_eval_name(task: str, key: str) -> str:
    """ "task metric" of an lm-eval result key ("acc,none"), the filter named when it is not "none"."""
    metric, _, kind = key.partition(",")
    return f"{task} {metric}" if kind in ("", "none") else f"{task} {metric} ({kind})"


def lm_eval_summaries(blocks: list[dict[str, Any] | None]) -> dict[str, MetricSummary]:
    """Mean and std over the runs of each lm-eval score ("task metric") their record.lm_eval blocks hold
    ({"results": {task: {"acc,none": 0.5, "acc_stderr,none": 0.1, ...}}}): every finite number but the
    standard errors, in the order first met; n is the runs that recorded it."""
    scores: dict[str, list[float]] = {}
    for block in blocks:
        results = block.get("results") if isinstance(block, dict) else None
        for task, values in (results if isinstance(results, dict) else {}).items():
            for key, value in values.items() if isinstance(values, dict) else ():
                if "_stderr" not in key and is_finite(value):
                    scores.setdefault(_lm_eval_name(task, key), []).append(float(value))
    summaries = {}
    for name, values in scores.items():
        stats = mean_std(values)
        summaries[name] = MetricSummary(stats.mean, stats.std, stats.n, values)
    return summaries
