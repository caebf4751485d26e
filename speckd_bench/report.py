"""Leaderboard: group run records, aggregate over training seeds, compare with a baseline, render.

A group is every run of one eval set whose configs are equal but for the seed (and paths): groups that
differ in anything else are never averaged together. Groups that share a protocol (eval set, task,
preset, models, data, evaluation and training budget) form one section: their rows are comparable, the
baseline of a row comes from its own section, and the best value of a column is found within it.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group as RichGroup
from rich.table import Table
from rich.text import Text

from speckd_bench.config import NON_RESULT_KEYS, flatten
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.results import read_log
from speckd_bench.stats import (
    CONFIDENCE,
    RESAMPLES,
    BootstrapCI,
    coefficient_of_variation,
    mean_std,
    paired_bootstrap,
)

FORMATS = ("rich", "md", "csv", "latex", "html", "json")

# Config keys that never split a group: the seed is what we average over; the others do not change results.
_NOT_SETTINGS = {"seed", *NON_RESULT_KEYS}
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
}
_PROTOCOL_SECTIONS = ("model.", "data.", "eval.")

SIGNIFICANT = "†"
LEGEND = (
    "mean ± std over training seeds (sample std); n = training seeds. "
    f"Δ: difference to the baseline's mean with a {CONFIDENCE:.0%} paired bootstrap CI ({RESAMPLES:,} "
    "resamples of the eval "
    f"prompts and of the training seeds, paired where both have the same seeds); {SIGNIFICANT}: the CI "
    "excludes 0. Bold: best value of the column within its protocol. Spikes/run: steps whose loss exceeds "
    "train.spike_factor × the median of the previous 10 steps, mean per run. Grad-norm CV: std/mean of "
    "the gradient norm over the steps of a run, mean over runs. Final loss: mean over seeds (each method's "
    "own loss, so scales differ between methods and are not ranked); final-loss sd: its std across seeds. "
    "Diverged: runs stopped by a NaN/inf loss or gradient. TAR: SpecKD "
    "token acceptance rate, mean over steps and runs. Wall min: per run, mean."
)


def _is_protocol(key: str) -> bool:
    return key in _PROTOCOL_KEYS or key.startswith(_PROTOCOL_SECTIONS)


def _settings(record: dict[str, Any]) -> dict[str, str]:
    flat = flatten(record["config"])
    if record["status"] != "complete":  # interrupted runs (--include-interrupted) form their own rows
        flat["status"] = record["status"]
    if record.get("num_processes", 1) != 1:  # train.batch_size is per process: N processes are a protocol
        flat["num_processes"] = record["num_processes"]
    return {k: json.dumps(v) for k, v in flat.items() if k not in _NOT_SETTINGS}


@dataclass
class Run:
    """One record, read on demand together with its training log and samples."""

    record: dict[str, Any]
    dir: Path

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @cached_property
    def log(self) -> list[dict[str, Any]]:
        path = self.dir / self.record["paths"].get("train_log", "train_log.jsonl")
        return read_log(path) if path.is_file() else []

    def samples_file(self, eval_set: str) -> Path:
        entry = self.record["paths"].get("samples", "samples.jsonl")
        return self.dir / (entry.get(eval_set, "") if isinstance(entry, dict) else entry)

    def prompt_scores(self, eval_set: str, metric: str) -> dict[int, float] | None:
        """Per-example score of `metric` on eval_set, averaged over eval seeds; None when not stored.

        Samples carry `index`, `eval_seed`, `scores`; an `eval_set` field, where present, selects the set
        (samples without one belong to the run's own task)."""
        path = self.samples_file(eval_set)
        if not path.is_file():
            return None
        per_index: dict[int, list[float]] = defaultdict(list)
        for sample in read_log(path):
            if sample.get("eval_set", self.record["task"]) != eval_set:
                continue
            value = sample.get("scores", {}).get(metric)
            if value is None:
                return None
            per_index[sample["index"]].append(value)
        return {i: float(np.mean(v)) for i, v in per_index.items()} or None


@dataclass
class Group:
    eval_set: str
    runs: list[Run]
    protocol: dict[str, str]
    settings: dict[str, str]
    """Non-protocol settings (json-encoded values), method.name included."""
    shown_settings: dict[str, Any] = field(default_factory=dict)
    """The settings that tell this group apart from other groups of the same method."""
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.runs[0].record["method"]

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.shown_settings.items())
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


@dataclass
class Filters:
    tasks: list[str] = field(default_factory=list)
    """Training task or eval set names."""
    methods: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    since: datetime | None = None

    def keep_record(self, record: dict[str, Any]) -> bool:
        model = record["config"]["model"]
        if self.teachers and model["teacher"] not in self.teachers:
            return False
        if self.students and model["student"] not in self.students:
            return False
        return self.since is None or _created(record) >= self.since

    def keep_set(self, record: dict[str, Any], eval_set: str) -> bool:
        return not self.tasks or record["task"] in self.tasks or eval_set in self.tasks


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; a value without a timezone is read as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _created(record: dict[str, Any]) -> datetime:
    return parse_since(record.get("created", "1970-01-01"))


def _main_metric(records: list[dict[str, Any]], eval_set: str) -> str:
    record = records[0]
    names = list(record["metrics"][eval_set].get("after", {}).get("metrics", {}))
    return record["main_metric"] if record["main_metric"] in names or not names else names[0]


def _values(runs: list[Run], path: str) -> list[float]:
    out = []
    for run in runs:
        value: Any = run.record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _stage_metric(run: Run, eval_set: str, stage: str, metric: str) -> float | None:
    per_set = run.record["metrics"][eval_set]
    block = per_set.get("after", {}) if stage == "after" else per_set.get("before", {}).get(stage, {})
    return block.get("metrics", {}).get(metric)


def _mean(values: list[float]) -> float | None:
    stats = mean_std(values)
    return stats.mean if stats else None


def _metric_block(group: Group, metric: str) -> dict[str, Any]:
    runs, eval_set = group.runs, group.eval_set
    after = [v for r in runs if (v := _stage_metric(r, eval_set, "after", metric)) is not None]
    stats = mean_std(after)
    eval_seed_spread = [
        r.record["metrics"][eval_set]["after"]["std_over_eval_seeds"][metric]
        for r in runs
        if len(r.record["metrics"][eval_set].get("after", {}).get("per_seed", {})) > 1
    ]
    return {
        "mean": stats.mean if stats else None,
        "std": stats.std if stats else None,
        "n": stats.n if stats else 0,
        "per_run": after,
        "eval_seed_std": _mean(eval_seed_spread),
        "init": _mean([v for r in runs if (v := _stage_metric(r, eval_set, "init", metric)) is not None]),
        "raw": _mean([v for r in runs if (v := _stage_metric(r, eval_set, "raw", metric)) is not None]),
    }


def _row(group: Group, metrics: list[str]) -> dict[str, Any]:
    runs = group.runs
    first = runs[0].record
    blocks = {m: _metric_block(group, m) for m in metrics}
    main = blocks[metrics[0]]
    final_loss = mean_std(_values(runs, "training.final_loss"))
    spikes = _values(runs, "training.loss_spikes")
    cvs = [
        c for r in runs if (c := coefficient_of_variation([s.get("grad_norm") for s in r.log])) is not None
    ]
    tars = _values(runs, "training.tar_mean")
    seeds = sorted(r.seed for r in runs)
    return {
        "task": first["task"],
        "eval_set": group.eval_set,
        "method": group.method,
        "label": group.label,
        "teacher": first["config"]["model"]["teacher"],
        "student": first["config"]["model"]["student"],
        "settings": group.shown_settings,
        "metric": metrics[0],
        "n_seeds": len(runs),
        "seeds": seeds,
        "mean": main["mean"],
        "std": main["std"],
        "metrics": blocks,
        "init": main["init"],
        "raw": main["raw"],
        "final_loss": final_loss.mean if final_loss else None,
        "final_loss_std": final_loss.std if final_loss else None,
        "loss_spikes": spikes,
        "loss_spikes_per_run": _mean(spikes),
        "grad_norm_cv": _mean(cvs),
        "grad_norm_max": max(_values(runs, "training.grad_norm_max"), default=None),
        "diverged": sum(bool(r.record["training"].get("diverged")) for r in runs),
        "tar_mean": _mean(tars),
        "train_tokens_per_s": _mean(_values(runs, "timings.train_tokens_per_s")),
        "wall_min": (_mean(_values(runs, "timings.wall_s")) or 0.0) / 60,
        "wall_s_total": sum(_values(runs, "timings.wall_s")),
        "run_ids": sorted(r.record["run_id"] for r in runs),
        "delta": {},
        "is_baseline": False,
    }


def compare(group: Group, base: Group, metric: str) -> BootstrapCI | None:
    """Paired bootstrap of group - base on `metric` over the prompts every run of both has scored;
    training seeds are paired when both groups ran exactly the same seeds. None without samples."""
    scores = {id(r): r.prompt_scores(group.eval_set, metric) for r in group.runs + base.runs}
    if any(s is None for s in scores.values()):
        return None
    common = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not common:
        return None
    seeds, base_seeds = [r.seed for r in group.runs], [r.seed for r in base.runs]
    paired = sorted(seeds) == sorted(base_seeds) and len(set(seeds)) == len(seeds)

    def matrix(runs: list[Run]) -> np.ndarray:
        ordered = sorted(runs, key=lambda r: r.seed) if paired else runs
        return np.array([[scores[id(r)][i] for i in common] for r in ordered])

    return paired_bootstrap(matrix(group.runs), matrix(base.runs), seeds_paired=paired)


def _pick_baseline(groups: list[Group], baseline: str) -> Group | None:
    candidates = [g for g in groups if g.method == baseline]
    return min(candidates, key=lambda g: (len(g.shown_settings), -len(g.runs)), default=None)


# protocol keys the description always shows; other keys are named when they differ between sections
_DESCRIBED = {
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


def _describe(
    protocol: dict[str, Any], runs: list[Run], eval_set: str, metric: str, varying: list[str]
) -> str:
    """One line: what every row of a section shares (decoding, eval seeds, sizes, start point)."""
    p = protocol
    data = runs[0].record.get("data", {})
    if p["eval.decoding"] == "greedy":
        decoding = "greedy"
    else:
        decoding = (
            f"sampling (T={p['eval.temperature']}, top-p {p['eval.top_p']}, top-k {p['eval.top_k']}, "
            f"no-repeat {p['eval.no_repeat_ngram_size']})"
        )
    budget = f"{p['train.max_steps']} steps" if p["train.max_steps"] else f"{p['train.epochs']} epoch(s)"
    steps = max(_values(runs, "training.steps"), default=0)

    def start(stage: str) -> str:
        return _fmt(
            _mean([v for r in runs if (v := _stage_metric(r, eval_set, stage, metric)) is not None]), 2
        )

    parts = [
        p["task"] if p["task"] == eval_set else f"trained on {p['task']}, evaluated on {eval_set}",
        f"teacher {p['model.teacher']} → student {p['model.student']}",
        f"preset {p['preset']}",
        f"{decoding}, {p['eval.max_new_tokens']} new tokens, eval seeds {runs[0].record['seeds']['eval']}",
        f"{data.get('n_train', p['data.max_train_examples'])} train rows, "
        f"{data.get('n_eval', p['data.max_eval_examples'])} eval rows, "
        f"≤{p['data.max_length']} tokens (prompt ≤{p['data.max_prompt_length']})",
        f"{budget}, batch {p['train.batch_size']}×{p['train.grad_accum']}, {steps:.0f} steps",
        f"SFT warm start {p['train.init_sft_epochs']} epoch(s): "
        f"{metric} raw {start('raw')} → init {start('init')}",
    ]
    distinct = ", ".join(f"{k}={json.dumps(p.get(k))}" for k in varying if k not in _DESCRIBED)
    return " · ".join(parts + ([f"where {distinct}"] if distinct else []))


def build_sections(
    records: list[dict[str, Any]],
    results_dir: Path,
    *,
    filters: Filters | None = None,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    sort: str = "metric",
) -> list[Section]:
    """Group, aggregate, compare and sort; method filters apply after the baseline is found."""
    filters = filters or Filters()
    if sort not in SORT_KEYS:
        raise UserError(
            f"--sort {sort!r} is not one of {', '.join(SORT_KEYS)}{did_you_mean(sort, SORT_KEYS)}"
        )
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for record in records:
        if not filters.keep_record(record):
            continue
        for eval_set in record["metrics"]:
            if filters.keep_set(record, eval_set):
                run = Run(record, results_dir / "runs" / record["run_id"])
                groups[(eval_set, json.dumps(_settings(record), sort_keys=True))].append(run)
    by_section: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for (eval_set, key), runs in groups.items():
        settings = json.loads(key)
        protocol = {k: v for k, v in settings.items() if _is_protocol(k)}
        rest = {k: v for k, v in settings.items() if not _is_protocol(k)}
        by_section[(eval_set, json.dumps(protocol, sort_keys=True))].append(
            Group(eval_set, runs, protocol, rest)
        )
    known = {
        m
        for g in groups.values()
        for r in g
        for per_set in r.record["metrics"].values()
        for m in per_set.get("after", {}).get("metrics", {})
    }
    for name in metrics or []:
        if name not in known:
            hint = did_you_mean(name, known)
            raise UserError(f"--metric {name!r} is in no record{hint}; known: {', '.join(sorted(known))}")
    protocols = [json.loads(key) for _, key in by_section]
    varying = sorted(k for k in set().union(*protocols) if len({p.get(k) for p in protocols}) > 1)
    sections = [
        _section(members, metrics, baseline, filters, sort, varying) for members in by_section.values()
    ]
    sections = [s for s in sections if s.groups]
    sections.sort(key=lambda s: (s.eval_set, s.description))
    return sections


def _section(
    groups: list[Group],
    metrics: list[str] | None,
    baseline: str | None,
    filters: Filters,
    sort: str,
    varying: list[str],
) -> Section:
    """One protocol's groups; `varying`: protocol keys that differ between sections, named in the
    description so that two sections never read alike."""
    eval_set = groups[0].eval_set
    runs = [r for g in groups for r in g.runs]
    available = {m for r in runs for m in r.record["metrics"][eval_set].get("after", {}).get("metrics", {})}
    shown = (
        [m for m in metrics if m in available]
        if metrics
        else [_main_metric([r.record for r in runs], eval_set)]
    )
    per_method: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        per_method[g.method].append(g)
    for same in per_method.values():
        keys = sorted({k for g in same for k in g.settings})
        differ = [k for k in keys if len({g.settings.get(k) for g in same}) > 1 and k != "method.name"]
        for g in same:
            g.shown_settings = {k: json.loads(g.settings[k]) for k in differ if k in g.settings}
    protocol = {k: json.loads(v) for k, v in groups[0].protocol.items()}
    section = Section(
        eval_set,
        protocol,
        _describe(protocol, runs, eval_set, shown[0] if shown else "-", varying),
        shown,
        groups,
        baseline,
        varying,
    )
    if not shown:
        section.groups = []
        return section
    for g in groups:
        g.row = _row(g, shown)
        g.row["protocol"] = section.description
        g.row["protocol_config"] = protocol
        seeds = [r.seed for r in g.runs]
        if len(set(seeds)) < len(seeds):
            section.notes.append(
                f"{g.label}: seeds {sorted(seeds)} repeat (reruns into one results dir count as extra seeds)"
            )
    if baseline:
        base = _pick_baseline(groups, baseline)
        if base is None:
            section.notes.append(f"no {baseline} runs for {eval_set} under this protocol: no Δ column")
        for g in groups if base else []:
            g.row["is_baseline"] = g is base
            for m in shown:
                ci = None if g is base else compare(g, base, m)
                g.row["delta"][m] = (
                    {"baseline": base.label, **asdict(ci), "significant": ci.excludes_zero} if ci else None
                )
    section.groups = [g for g in groups if not filters.methods or g.method in filters.methods]
    key, direction = SORT_KEYS[sort]
    present = [g for g in section.groups if key(g.row) is not None]
    missing = [g for g in section.groups if key(g.row) is None]
    section.groups = sorted(present, key=lambda g: key(g.row), reverse=direction > 0) + missing
    return section


def _delta_of(row: dict[str, Any], metric: str) -> float | None:
    delta = row["delta"].get(metric)
    return delta["diff"] if delta else None


SORT_KEYS: dict[str, tuple[Callable[[dict[str, Any]], Any], int]] = {
    "metric": (lambda r: r["mean"], +1),
    "delta": (lambda r: _delta_of(r, r["metric"]), +1),
    "method": (lambda r: r["label"], -1),
    "spikes": (lambda r: r["loss_spikes_per_run"], -1),
    "grad_cv": (lambda r: r["grad_norm_cv"], -1),
    "diverged": (lambda r: r["diverged"], -1),
    "tok_s": (lambda r: r["train_tokens_per_s"], +1),
    "wall": (lambda r: r["wall_min"], -1),
}
"""--sort NAME: (row value, +1 = highest first / -1 = lowest first); rows without a value go last."""


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _delta_text(row: dict[str, Any], metric: str) -> str:
    delta = row["delta"].get(metric)
    if delta is None:
        return "baseline" if row["is_baseline"] else "-"
    mark = f" {SIGNIFICANT}" if delta["significant"] else ""
    return f"{delta['diff']:+.2f} [{delta['low']:+.2f}, {delta['high']:+.2f}]{mark}"


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[dict[str, Any]], str]
    value: Callable[[dict[str, Any]], float | None] | None = None
    best: str | None = None
    """'max' or 'min': the best value of the column within a section is highlighted."""


def _columns(section: Section) -> list[Column]:
    rows = [g.row for g in section.groups]
    cols = [Column("method", lambda r: r["method"])]
    if any(r["settings"] for r in rows):
        cols.append(
            Column(
                "settings",
                lambda r: ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["settings"].items()) or "-",
            )
        )
    cols.append(Column("n", lambda r: str(r["n_seeds"])))
    for m in section.metrics:
        cols.append(
            Column(
                f"{m} (mean ± std)",
                lambda r, m=m: _pm(r["metrics"][m]["mean"], r["metrics"][m]["std"], 2),
                lambda r, m=m: r["metrics"][m]["mean"],
                "max",
            )
        )
        if any(r["metrics"][m]["eval_seed_std"] is not None for r in rows):
            cols.append(Column(f"{m} eval-seed sd", lambda r, m=m: _fmt(r["metrics"][m]["eval_seed_std"], 2)))
        if any(r["delta"].get(m) for r in rows):
            cols.append(
                Column(
                    f"Δ {m} vs {section.baseline} [{CONFIDENCE:.0%} CI]",
                    lambda r, m=m: _delta_text(r, m),
                    lambda r, m=m: _delta_of(r, m),
                    "max",
                )
            )
    cols += [
        Column("final loss", lambda r: _fmt(r["final_loss"], 3)),
        Column("final-loss sd (seeds)", lambda r: _fmt(r["final_loss_std"], 3)),
        Column(
            "spikes/run",
            lambda r: _fmt(r["loss_spikes_per_run"], 1),
            lambda r: r["loss_spikes_per_run"],
            "min",
        ),
        Column("grad-norm CV", lambda r: _fmt(r["grad_norm_cv"], 2), lambda r: r["grad_norm_cv"], "min"),
        Column(
            "diverged",
            lambda r: f"{r['diverged']}/{r['n_seeds']}",
            lambda r: r["diverged"] / r["n_seeds"],
            "min",
        ),
    ]
    if any(r["tar_mean"] is not None for r in rows):
        cols.append(Column("TAR", lambda r: _fmt(r["tar_mean"], 2)))
    cols += [
        Column(
            "train tok/s",
            lambda r: _fmt(r["train_tokens_per_s"], 0),
            lambda r: r["train_tokens_per_s"],
            "max",
        ),
        Column("wall min", lambda r: _fmt(r["wall_min"], 1), lambda r: r["wall_min"], "min"),
    ]
    return cols


def _cells(section: Section) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and (text, is best) cells of one section."""
    cols = _columns(section)
    rows = [g.row for g in section.groups]
    best: list[float | None] = []
    for col in cols:
        values = [v for r in rows if col.value and (v := col.value(r)) is not None]
        differ = len(set(values)) > 1
        best.append((max if col.best == "max" else min)(values) if col.best and differ else None)
    cells = [
        [
            (col.text(r), b is not None and col.value is not None and col.value(r) == b)
            for col, b in zip(cols, best, strict=True)
        ]
        for r in rows
    ]
    return [c.title for c in cols], cells


def _md(sections: list[Section]) -> str:
    out = []
    for s in sections:
        headers, cells = _cells(s)
        esc = lambda t: t.replace("|", "\\|")  # noqa: E731
        out += [f"**{esc(s.eval_set)}**: {esc(s.description)}", ""]
        out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(f"**{esc(t)}**" if b else esc(t) for t, b in row) + " |" for row in cells]
        out += [*(f"- note: {esc(n)}" for n in s.notes), ""]
    return "\n".join([*out, LEGEND, ""])


_LATEX = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
        "×": r"$\times$",
        "→": r"$\to$",
        "Δ": r"$\Delta$",
        "·": r"$\cdot$",
        SIGNIFICANT: r"$^\dagger$",
    }
)


def _latex(sections: list[Section]) -> str:
    out = ["% speckd-bench leaderboard; needs \\usepackage{booktabs}"]
    for s in sections:
        headers, cells = _cells(s)
        esc = lambda t: t.translate(_LATEX)  # noqa: E731
        spec = "l" * (2 if headers[1] == "settings" else 1)
        out += [
            f"% {s.eval_set}: {s.description}",
            "\\begin{tabular}{" + spec + "r" * (len(headers) - len(spec)) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in headers) + " \\\\",
            "\\midrule",
        ]
        out += [
            " & ".join(f"\\textbf{{{esc(t)}}}" if b else esc(t) for t, b in row) + " \\\\" for row in cells
        ]
        out += ["\\bottomrule", "\\end{tabular}", ""]
    out.append(f"% {LEGEND}")
    return "\n".join(out) + "\n"


def _html(sections: list[Section]) -> str:
    out = ['<div class="speckd-leaderboard">']
    for s in sections:
        headers, cells = _cells(s)
        out += [
            f"<table>\n<caption>{html.escape(s.eval_set)}: {html.escape(s.description)}</caption>",
            "<thead>",
        ]
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        out += ["</thead>", "<tbody>"]
        for row in cells:
            tds = (
                f"<td><strong>{html.escape(t)}</strong></td>" if b else f"<td>{html.escape(t)}</td>"
                for t, b in row
            )
            out.append("<tr>" + "".join(tds) + "</tr>")
        out += ["</tbody>", "</table>"]
        out += [f"<p>note: {html.escape(n)}</p>" for n in s.notes]
    out += [f"<p>{html.escape(LEGEND)}</p>", "</div>"]
    return "\n".join(out) + "\n"


def _csv(sections: list[Section]) -> str:
    """One flat, numeric table over every section (empty cell = no value)."""
    metrics = list(dict.fromkeys(m for s in sections for m in s.metrics))
    per_metric = ("mean", "std", "eval_seed_std", "delta", "delta_low", "delta_high", "delta_significant")
    tail = (
        "init",
        "raw",
        "final_loss",
        "final_loss_std",
        "loss_spikes_per_run",
        "grad_norm_cv",
        "diverged",
        "tar_mean",
        "train_tokens_per_s",
        "wall_min",
        "protocol",
    )
    head = ["eval_set", "task", "teacher", "student", "method", "settings", "n_seeds", "seeds"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head + [f"{m}_{k}" for m in metrics for k in per_metric] + list(tail))
    for s in sections:
        for g in s.groups:
            r = g.row
            line: list[Any] = [
                r["eval_set"],
                r["task"],
                r["teacher"],
                r["student"],
                r["method"],
                json.dumps(r["settings"]) if r["settings"] else "",
                r["n_seeds"],
                " ".join(map(str, r["seeds"])),
            ]
            for m in metrics:
                block = r["metrics"].get(m, {})
                delta = r["delta"].get(m) or {}
                line += [
                    block.get("mean"),
                    block.get("std"),
                    block.get("eval_seed_std"),
                    delta.get("diff"),
                    delta.get("low"),
                    delta.get("high"),
                    delta.get("significant"),
                ]
            line += [r[k] for k in tail]
            writer.writerow(["" if v is None else v for v in line])
    return buf.getvalue()


def _rich(sections: list[Section]) -> RichGroup:
    parts: list[Any] = []
    for s in sections:
        headers, cells = _cells(s)
        table = Table(title=Text(f"{s.eval_set}: {s.description}"), title_justify="left")
        for i, title in enumerate(headers):
            table.add_column(title, overflow="fold", justify="left" if i < 2 else "right")
        for row in cells:
            table.add_row(*(Text(t, style="bold green" if b else "") for t, b in row))
        parts.append(table)
        parts += [Text(f"note: {n}", style="yellow") for n in s.notes]
    parts.append(Text(LEGEND, style="dim"))
    return RichGroup(*parts)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")


def render(sections: list[Section], fmt: str) -> str | RichGroup:
    check_format(fmt)
    if fmt == "json":
        return json.dumps([g.row for s in sections for g in s.groups], indent=2) + "\n"
    return {"md": _md, "csv": _csv, "latex": _latex, "html": _html, "rich": _rich}[fmt](sections)
