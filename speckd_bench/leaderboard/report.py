"""Leaderboard: group run records, aggregate over training seeds, compare with a baseline, render.

A group is every run of one eval set whose configs are equal but for the seed (and paths): groups that
differ in anything else are never averaged together. Groups that share a protocol (eval set, task,
preset, models, data, evaluation, training budget and the SFT warm start they began from) form one
section: their rows are comparable, the baseline of a row comes from its own section, and the best value
of a column is found within it. Each section opens with reference rows (teacher, raw and warm-start
student, trivial floors) that put its scores in context.
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

from speckd_bench.api.metrics import FIDELITY_METRICS, Better, better
from speckd_bench.config.run_config import NON_RESULT_KEYS, flatten
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.evaluation.degeneracy import MAX_EMPTY, MAX_REPETITION, MIN_DISTINCT_2, degenerate_reasons
from speckd_bench.leaderboard.stats import (
    ALPHA,
    CONFIDENCE,
    MIN_SEEDS_SIGNIFICANT,
    RESAMPLES,
    BootstrapCI,
    coefficient_of_variation,
    compare_family,
    mean_std,
    paired_bootstrap,
)
from speckd_bench.records.run_record import RunRecord

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
    "init",
    "task_digest",
}
_PROTOCOL_SECTIONS = ("model.", "data.", "eval.")

SIGNIFICANT = "†"
DEGENERATE = "⚠ degenerate"
LOWER = "↓"
LEGEND = (
    f"mean ± std over training seeds (sample std); n = training seeds; {LOWER}: lower is better. "
    "Δ: difference to the baseline's mean, with a t-interval over training seeds (the run-level metric): "
    "paired t on the per-seed differences when both ran the same seeds, else Welch's t; none with fewer "
    "than 2 seeds on a side or no seed-to-seed variation. Holm correction per section and metric over "
    "the methods compared with the baseline: the comparison with the i-th smallest of m p-values gets a "
    f"t-interval at confidence 1 - {ALPHA:g}/(m - i + 1). {SIGNIFICANT}: Holm rejects at {ALPHA:g} and "
    f"both sides have ≥ {MIN_SEEDS_SIGNIFICANT} seeds. Prompt-bootstrap CI: {CONFIDENCE:.0%} paired "
    f"bootstrap ({RESAMPLES:,} resamples of the eval prompts and the training seeds), for context: it "
    "ignores the multiplicity and never marks significance. Bold: best value of a metric column among "
    "the methods of its section. Reference rows (italic, first in a section; no Δ, no stability): "
    "teacher; raw student and init student (after the SFT warm start) before training; floors: empty "
    "output, one constant text (the candidate scoring best on the train references), echo of the "
    "instruction / input; mean over the section's runs where these differ. Degeneracy of the outputs: "
    "empty % = share of empty outputs, distinct-2 = distinct word bigrams / word bigrams, rep = share "
    f"of repeated 4-grams within an output (mean over outputs); {DEGENERATE} when empty > "
    f"{MAX_EMPTY:.0%}, distinct-2 < {MIN_DISTINCT_2} or rep > {MAX_REPETITION}. Spikes/run: steps whose "
    "loss exceeds "
    "train.spike_factor × the median of the previous 10 steps, mean per run. Grad-norm CV: std/mean of "
    "the gradient norm over the steps of a run, mean over runs. Final loss: mean over seeds (each method's "
    "own loss, so scales differ between methods and are not ranked); final-loss sd: its std across seeds. "
    "Diverged: runs stopped by a NaN/inf loss or gradient. TAR: SpecKD "
    "token acceptance rate, mean over steps and runs. Wall min: per run, mean."
)


def _is_protocol(key: str) -> bool:
    return key in _PROTOCOL_KEYS or key.startswith(_PROTOCOL_SECTIONS)


def init_key(record: RunRecord) -> str | None:
    """The cache key of the SFT warm start the run began from; None without one (or an older record)."""
    init = record.init
    return init.get("key") if init.get("enabled") else None


def task_digests(record: RunRecord, eval_set: str) -> dict[str, str] | None:
    """Digests of the task files (YAML, hook, metrics) a record's eval set and training task were
    scored with; None for records older than task provenance."""
    sources = record.data.get("task_sources")
    if not isinstance(sources, dict):
        return None
    names = dict.fromkeys([record.task, eval_set])
    return {n: s.get("digest") if isinstance(s := sources.get(n), dict) else None for n in names}


def _settings(record: RunRecord, eval_set: str) -> dict[str, str]:
    flat = flatten(record.config)
    flat["init"] = init_key(record)
    flat["task_digest"] = task_digests(record, eval_set)  # a changed task file is another protocol
    if not record.complete:  # interrupted runs (--include-interrupted) form their own rows
        flat["status"] = record.status
    if record.num_processes != 1:  # train.batch_size is per process: N processes are a protocol
        flat["num_processes"] = record.num_processes
    return {k: json.dumps(v) for k, v in flat.items() if k not in _NOT_SETTINGS}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_rows(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of a run's JSONL file (training log, samples). A line that is not one (garbled,
    not UTF-8) is left out and counted in `problems`; a last line without its newline (torn by a kill)
    is left out silently."""
    rows, bad = [], []
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n") or not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    bad.append(number)
    except OSError as exc:
        problems.append(f"{path}: unreadable ({exc.strerror}); left out")
    if bad:
        problems.append(f"{path}: {len(bad)} line(s) not a JSON object (first: line {bad[0]}); left out")
    return rows


@dataclass
class Run:
    """One record, read on demand together with its training log and samples."""

    record: RunRecord
    dir: Path
    problems: list[str] = field(default_factory=list)
    """Lines or files of the run left out while reading it (shown as notes)."""

    @property
    def seed(self) -> int:
        return int(self.record.seed or 0)

    @cached_property
    def log(self) -> list[dict[str, Any]]:
        path = self.dir / self.record.paths.get("train_log", "train_log.jsonl")
        return read_rows(path, self.problems) if path.is_file() else []

    def samples_file(self, eval_set: str) -> Path:
        entry = self.record.paths.get("samples", "samples.jsonl")
        return self.dir / (entry.get(eval_set, "") if isinstance(entry, dict) else entry)

    def prompt_scores(self, eval_set: str, metric: str) -> dict[int, float] | None:
        """Per-example score of `metric` on eval_set, averaged over eval seeds; None when not stored.

        Samples carry `index`, `eval_seed`, `scores`; an `eval_set` field, where present, selects the set
        (samples without one belong to the run's own task)."""
        path = self.samples_file(eval_set)
        if not path.is_file():
            return None
        per_index: dict[int, list[float]] = defaultdict(list)
        for sample in read_rows(path, self.problems):
            if sample.get("eval_set", self.record.task) != eval_set:
                continue
            scores, index = sample.get("scores"), sample.get("index")
            value = scores.get(metric) if isinstance(scores, dict) else None
            if not _number(value) or not isinstance(index, int):
                return None
            per_index[index].append(value)
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
        return str(self.runs[0].record.method)

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
    references: list[dict[str, Any]] = field(default_factory=list)
    """Reference rows: teacher, raw and init student, floors."""
    floor_verdict: str | None = None
    """Whether the best method beats every floor on the first metric."""


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

_NUMBER_MAPS = ("metrics", "std_over_eval_seeds", "degeneracy")
"""Keys of a record's per-set summaries whose values map names to numbers."""
_OBJECTS = ("after", "before", "reference", "raw", "init", "teacher", "floors", "per_seed")
"""Keys of a record's per-set summaries that hold an object where present."""
_CONFIG_KEYS = (
    *sorted(_DESCRIBED),
    *(f"eval.{k}" for k in ("temperature", "top_p", "top_k", "no_repeat_ngram_size")),
    *(f"data.max_{k}_examples" for k in ("train", "eval")),
)


def _summary_problem(value: Any, where: str) -> str | None:
    """What makes a per-set block of a record unusable (a name that should be an object and is not, a
    metric value that is not a number), or None."""
    if not isinstance(value, dict):
        return f"{where} is {json.dumps(value)[:30]}, expected an object"
    for key, sub in value.items():
        at = f"{where}.{key}"
        if key in _NUMBER_MAPS and sub is not None:
            if not isinstance(sub, dict):
                return f"{at} is {json.dumps(sub)[:30]}, expected an object of numbers"
            bad = next((k for k, v in sub.items() if v is not None and not _number(v)), None)
            if bad is not None:
                return f"{at}.{bad} is {json.dumps(sub[bad])[:30]}, not a number"
        elif key in _OBJECTS or isinstance(sub, dict):
            problem = None if sub is None else _summary_problem(sub, at)
            if problem or (key == "floors" and sub and not all(isinstance(f, dict) for f in sub.values())):
                return problem or f"{at} holds a floor that is not an object"
    return None


def record_problem(record: RunRecord) -> str | None:
    """Why a record cannot be tabulated (no eval set, a malformed metric, a config without the protocol
    keys), or None. RunRecord.from_json has checked its top-level fields."""
    if not record.metrics:
        return "its metrics hold no eval set"
    config = flatten(record.config)
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        return f"its config lacks {', '.join(missing)}"
    if not all(isinstance(config[f"model.{k}"], str) for k in ("teacher", "student")):
        return "its config.model names no teacher or student"
    for eval_set, block in record.metrics.items():
        problem = _summary_problem(block, f"metrics.{eval_set}")
        if problem:
            return problem
    return None


def usable_records(
    records: list[RunRecord], results_dir: Path
) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The records a leaderboard can use, and (record path, reason) of those it leaves out."""
    kept, skipped = [], []
    for record in records:
        problem = record_problem(record)
        if problem is None:
            kept.append(record)
        else:
            skipped.append((str(results_dir / "runs" / str(record.run_id) / "record.json"), problem))
    return kept, skipped


@dataclass
class Filters:
    tasks: list[str] = field(default_factory=list)
    """Training task or eval set names."""
    methods: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    since: datetime | None = None

    def keep_record(self, record: RunRecord) -> bool:
        model = record.config["model"]
        if self.teachers and model["teacher"] not in self.teachers:
            return False
        if self.students and model["student"] not in self.students:
            return False
        return self.since is None or _created(record) >= self.since

    def keep_set(self, record: RunRecord, eval_set: str) -> bool:
        return not self.tasks or record.task in self.tasks or eval_set in self.tasks


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; a value without a timezone is read as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _created(record: RunRecord) -> datetime:
    return parse_since(record.created or "1970-01-01")


def _main_metric(records: list[RunRecord], eval_set: str) -> str:
    record = records[0]
    names = list(record.metrics[eval_set].get("after", {}).get("metrics", {}))
    return record.main_metric if record.main_metric in names or not names else names[0]


def _values(runs: list[Run], path: str) -> list[float]:
    """The numbers at a dotted path of each run's record (e.g. training.final_loss), where present."""
    out = []
    section, _, rest = path.partition(".")
    for run in runs:
        value: Any = getattr(run.record, section)
        for part in rest.split(".") if rest else []:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _after(run: Run, eval_set: str) -> dict[str, Any]:
    """The run's SUMMARY of eval_set after training."""
    return run.record.metrics[eval_set].get("after", {})


def _after_metric(run: Run, eval_set: str, metric: str) -> float | None:
    return _after(run, eval_set).get("metrics", {}).get(metric)


def _mean(values: list[float]) -> float | None:
    stats = mean_std(values)
    return stats.mean if stats else None


def _mean_figures(figures: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Key-wise mean of the degeneracy figures that are present; None when none is."""
    present = [f for f in figures if f]
    return {k: float(np.mean([f[k] for f in present if k in f])) for k in present[0]} if present else None


def _metric_block(group: Group, metric: str) -> dict[str, Any]:
    runs, eval_set = group.runs, group.eval_set
    after = [v for r in runs if (v := _after_metric(r, eval_set, metric)) is not None]
    stats = mean_std(after)
    eval_seed_spread = [
        v
        for r in runs
        if len(_after(r, eval_set).get("per_seed") or {}) > 1
        and (v := (_after(r, eval_set).get("std_over_eval_seeds") or {}).get(metric)) is not None
    ]
    return {
        "mean": stats.mean if stats else None,
        "std": stats.std if stats else None,
        "n": stats.n if stats else 0,
        "per_run": after,
        "eval_seed_std": _mean(eval_seed_spread),
    }


def _context(record: RunRecord, eval_set: str) -> dict[str, Any]:
    """What every row of a record's section shares."""
    model = record.config["model"]
    return {
        "task": record.task,
        "eval_set": eval_set,
        "teacher": model["teacher"],
        "student": model["student"],
    }


def _with_degeneracy(row: dict[str, Any], figures: dict[str, float] | None) -> dict[str, Any]:
    return {**row, "degeneracy": figures, "degenerate": degenerate_reasons(figures) if figures else []}


def _row(group: Group, metrics: list[str]) -> dict[str, Any]:
    runs = group.runs
    blocks = {m: _metric_block(group, m) for m in metrics}
    main = blocks[metrics[0]]
    final_loss = mean_std(_values(runs, "training.final_loss"))
    spikes = _values(runs, "training.loss_spikes")
    cvs = [
        c for r in runs if (c := coefficient_of_variation([s.get("grad_norm") for s in r.log])) is not None
    ]
    tars = _values(runs, "training.tar_mean")
    seeds = sorted(r.seed for r in runs)
    row = {
        "kind": "method",
        **_context(runs[0].record, group.eval_set),
        "method": group.method,
        "label": group.label,
        "settings": group.shown_settings,
        "metric": metrics[0],
        "n_seeds": len(runs),
        "seeds": seeds,
        "mean": main["mean"],
        "std": main["std"],
        "metrics": blocks,
        "final_loss": final_loss.mean if final_loss else None,
        "final_loss_std": final_loss.std if final_loss else None,
        "loss_spikes": spikes,
        "loss_spikes_per_run": _mean(spikes),
        "grad_norm_cv": _mean(cvs),
        "grad_norm_max": max(_values(runs, "training.grad_norm_max"), default=None),
        "diverged": sum(bool(r.record.training.get("diverged")) for r in runs),
        "tar_mean": _mean(tars),
        "train_tokens_per_s": _mean(_values(runs, "timings.train_tokens_per_s")),
        "wall_min": (_mean(_values(runs, "timings.wall_s")) or 0.0) / 60,
        "wall_s_total": sum(_values(runs, "timings.wall_s")),
        "run_ids": sorted(str(r.record.run_id) for r in runs),
        "delta": {},
        "prompt_bootstrap": {},
        "is_baseline": False,
    }
    return _with_degeneracy(row, _mean_figures([_after(r, group.eval_set).get("degeneracy") for r in runs]))


def _paired(seeds: list[int], base_seeds: list[int]) -> bool:
    """Training seeds pair up when both groups ran exactly the same seeds, each once."""
    return sorted(seeds) == sorted(base_seeds) and len(set(seeds)) == len(seeds)


def prompt_bootstrap(group: Group, base: Group, metric: str) -> BootstrapCI | None:
    """Paired bootstrap of group - base on `metric` over the prompts every run of both has scored;
    training seeds are paired when both groups ran exactly the same seeds. None without samples."""
    scores = {id(r): r.prompt_scores(group.eval_set, metric) for r in group.runs + base.runs}
    if any(s is None for s in scores.values()):
        return None
    common = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not common:
        return None
    paired = _paired([r.seed for r in group.runs], [r.seed for r in base.runs])

    def matrix(runs: list[Run]) -> np.ndarray:
        ordered = sorted(runs, key=lambda r: r.seed) if paired else runs
        return np.array([[scores[id(r)][i] for i in common] for r in ordered])

    return paired_bootstrap(matrix(group.runs), matrix(base.runs), seeds_paired=paired)


def _seed_values(group: Group, metric: str) -> list[tuple[int, float]]:
    """(training seed, run-level metric after training), in seed order."""
    runs = sorted(group.runs, key=lambda r: r.seed)
    return [(r.seed, v) for r in runs if (v := _after_metric(r, group.eval_set, metric)) is not None]


def _compare_seeds(groups: list[Group], base: Group, metric: str) -> dict[int, dict[str, Any]]:
    """Seed-level comparison of each group with the baseline on `metric`, Holm-corrected over the groups
    (one family); keyed by id(group), absent for groups without values."""
    base_values = _seed_values(base, metric)
    members = [(g, values) for g in groups if (values := _seed_values(g, metric)) and base_values]
    family = [
        (
            [v for _, v in values],
            [v for _, v in base_values],
            _paired([s for s, _ in values], [s for s, _ in base_values]),
        )
        for _, values in members
    ]
    return {id(g): asdict(c) for (g, _), c in zip(members, compare_family(family), strict=True)}


def _pick_baseline(groups: list[Group], baseline: str) -> Group | None:
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


def _references(runs: list[Run], eval_set: str, metrics: list[str]) -> list[dict[str, Any]]:
    """Reference rows of a section: the mean over its runs of each one's recorded figures."""
    by_row: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for key, summary in _reference_summaries(run.record, eval_set).items():
            by_row[key].append(summary)
    rows = []
    for (source, label), summaries in by_row.items():
        values = {
            m: [v for s in summaries if (v := s.get("metrics", {}).get(m)) is not None] for m in metrics
        }
        differ = any(len(set(v)) > 1 for v in values.values())
        row = {
            "kind": "reference",
            "source": source,
            "label": f"{label} (mean of {len(summaries)})" if differ else label,
            **_context(runs[0].record, eval_set),
            "method": None,
            "n_runs": len(summaries),
            "metrics": {m: {"mean": _mean(v), "std": None, "n": len(v)} for m, v in values.items()},
        }
        rows.append(_with_degeneracy(row, _mean_figures([s.get("degeneracy") for s in summaries])))
    return rows


def _sign(metric: str) -> int:
    """+1 when higher is better, -1 when lower is."""
    return better(metric).sign


def best_row(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The row with the best mean of `metric` (None when no row has one)."""
    scored = [r for r in rows if r["metrics"][metric]["mean"] is not None]
    return max(scored, key=lambda r: _sign(metric) * r["metrics"][metric]["mean"], default=None)


def _floor_verdict(section: Section) -> str | None:
    """Does the best method beat every floor on the section's first metric? None without floors."""
    m = section.metrics[0]
    floors = [r for r in section.references if r["source"] == "floor" and r["metrics"][m]["mean"] is not None]
    best = best_row([g.row for g in section.groups], m)
    if not floors or best is None:
        return None
    value = best["metrics"][m]["mean"]
    unbeaten = [f for f in floors if _sign(m) * value <= _sign(m) * f["metrics"][m]["mean"]]
    head = f"best method {best['label']} ({m} {value:.2f})"
    if not unbeaten:
        top = best_row(floors, m)
        return f"{head} beats every floor (best floor: {top['label']} {top['metrics'][m]['mean']:.2f})"
    return f"{head} does not beat floor: " + ", ".join(
        f"{f['label']} {f['metrics'][m]['mean']:.2f}" for f in unbeaten
    )


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
        f"lr {plan.get('lr')}, final loss {_fmt(training.get('final_loss'), 3)}"
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
    steps = max(_values(runs, "training.steps"), default=0)
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
    distinct = ", ".join(f"{k}={json.dumps(p.get(k))}" for k in varying if k not in _DESCRIBED)
    return " · ".join(parts + ([f"where {distinct}"] if distinct else []))


def build_sections(
    records: list[RunRecord],
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
        for eval_set in record.metrics:
            if filters.keep_set(record, eval_set):
                run = Run(record, results_dir / "runs" / str(record.run_id))
                groups[(eval_set, json.dumps(_settings(record, eval_set), sort_keys=True))].append(run)
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
        for per_set in r.record.metrics.values()
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


def _shown_metrics(runs: list[Run], eval_set: str, metrics: list[str] | None) -> list[str]:
    """--metric's names where recorded; by default the main metric and the recorded fidelity metrics."""
    available = {m for r in runs for m in _after(r, eval_set).get("metrics", {})}
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
    base = _pick_baseline(groups, baseline)
    if base is None:
        section.notes.append(f"no {baseline} runs for {section.eval_set} under this protocol: no Δ column")
        return
    others = [g for g in groups if g is not base]
    base.row["is_baseline"] = True
    for m in section.metrics:
        seeds = _compare_seeds(others, base, m)
        base.row["delta"][m] = base.row["prompt_bootstrap"][m] = None
        for g in others:
            ci = prompt_bootstrap(g, base, m)
            g.row["delta"][m] = {"baseline": base.label, **seeds[id(g)]} if id(g) in seeds else None
            g.row["prompt_bootstrap"][m] = asdict(ci) if ci else None


def _sort(groups: list[Group], sort: str, metric: str) -> list[Group]:
    """Rows by --sort; metric and delta follow the first metric's direction; rows without a value last."""
    key, direction = SORT_KEYS[sort]
    if sort in ("metric", "delta"):
        direction *= _sign(metric)
    present = [g for g in groups if key(g.row) is not None]
    missing = [g for g in groups if key(g.row) is None]
    return sorted(present, key=lambda g: key(g.row), reverse=direction > 0) + missing


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
    shown = _shown_metrics(runs, eval_set, metrics)
    _name_settings(groups)
    protocol = {k: json.loads(v) for k, v in groups[0].protocol.items()}
    description = _describe(protocol, runs, eval_set, varying)
    section = Section(eval_set, protocol, description, shown, groups, baseline, varying)
    if not shown:
        section.groups = []
        return section
    recorded = sorted({m for r in runs for m in _after(r, eval_set).get("metrics", {})})
    every = list(dict.fromkeys([*shown, *recorded]))  # rows carry every metric; columns show `shown`
    section.references = [
        {**r, "protocol": description, "protocol_config": protocol}
        for r in _references(runs, eval_set, every)
    ]
    for g in groups:
        g.row = {**_row(g, every), "protocol": description, "protocol_config": protocol}
        seeds = [r.seed for r in g.runs]
        if len(set(seeds)) < len(seeds):
            section.notes.append(
                f"{g.label}: seeds {sorted(seeds)} repeat (reruns into one results dir count as extra seeds)"
            )
    if baseline:
        _compare_with_baseline(section, baseline)
    section.notes += dict.fromkeys(problem for r in runs for problem in r.problems)
    kept = [g for g in groups if not filters.methods or g.method in filters.methods]
    section.groups = _sort(kept, sort, shown[0])
    section.floor_verdict = _floor_verdict(section)
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
    """mean ± std; the mean alone when there is no std (reference rows)."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _interval(diff: float, low: float | None, high: float | None) -> str:
    return f"{diff:+.2f}" + ("" if low is None else f" [{low:+.2f}, {high:+.2f}]")


def _delta_text(row: dict[str, Any], metric: str) -> str:
    delta = row["delta"].get(metric)
    if delta is None:
        return "baseline" if row["is_baseline"] else "-"
    if delta["low"] is None:
        few = min(delta["n"], delta["n_base"]) < 2
        why = f"n={delta['n']} vs {delta['n_base']}" if few else "no seed-to-seed variation"
        return f"{delta['diff']:+.2f} (no interval: {why})"
    mark = f" {SIGNIFICANT}" if delta["significant"] else ""
    return _interval(delta["diff"], delta["low"], delta["high"]) + mark


def _bootstrap_text(row: dict[str, Any], metric: str) -> str:
    ci = row["prompt_bootstrap"].get(metric)
    return _interval(ci["diff"], ci["low"], ci["high"]) if ci else "-"


def _degenerate_text(row: dict[str, Any]) -> str:
    return f"{DEGENERATE}: {', '.join(row['degenerate'])}" if row["degenerate"] else "-"


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[dict[str, Any]], str]
    value: Callable[[dict[str, Any]], float | None] | None = None
    """Metric columns: the value whose best among the section's methods is highlighted."""
    sign: int = 1
    """+1: the highest value is best, -1: the lowest."""
    reference: bool = False
    """Whether reference rows fill this column (else it stays empty for them)."""


def _metric_columns(section: Section, rows: list[dict[str, Any]]) -> list[Column]:
    cols = []
    for m in section.metrics:
        arrow = f" {LOWER}" if better(m) is Better.LOWER else ""
        cols.append(
            Column(
                f"{m}{arrow} (mean ± std)",
                lambda r, m=m: _pm(r["metrics"][m]["mean"], r["metrics"][m]["std"], 2),
                lambda r, m=m: r["metrics"][m]["mean"],
                _sign(m),
                reference=True,
            )
        )
        if any(r["metrics"][m]["eval_seed_std"] is not None for r in rows):
            cols.append(Column(f"{m} eval-seed sd", lambda r, m=m: _fmt(r["metrics"][m]["eval_seed_std"], 2)))
        if any(r["is_baseline"] for r in rows):
            title = f"Δ {m} vs {section.baseline} [seed t-CI, Holm]"
            cols.append(Column(title, lambda r, m=m: _delta_text(r, m)))
        if any(r["prompt_bootstrap"].get(m) for r in rows):
            title = f"Δ {m} prompt-bootstrap CI [{CONFIDENCE:.0%}]"
            cols.append(Column(title, lambda r, m=m: _bootstrap_text(r, m)))
    return cols


def _degeneracy_columns(section: Section) -> list[Column]:
    if not any(r["degeneracy"] for r in [*section.references, *(g.row for g in section.groups)]):
        return []

    def figure(name: str, scale: float, digits: int) -> Callable[[dict[str, Any]], str]:
        return lambda r: _fmt(r["degeneracy"][name] * scale, digits) if r["degeneracy"] else "-"

    return [
        Column("empty %", figure("empty", 100, 0), reference=True),
        Column("distinct-2", figure("distinct_2", 1, 2), reference=True),
        Column("rep", figure("repetition", 1, 2), reference=True),
        Column("degenerate", _degenerate_text, reference=True),
    ]


def _columns(section: Section) -> list[Column]:
    rows = [g.row for g in section.groups]
    label = Column(
        "method", lambda r: r["label"] if r["kind"] == "reference" else r["method"], reference=True
    )
    cols = [label]
    if any(r["settings"] for r in rows):
        cols.append(
            Column(
                "settings",
                lambda r: ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["settings"].items()) or "-",
            )
        )
    cols.append(Column("n", lambda r: str(r["n_seeds"])))
    cols += _metric_columns(section, rows)
    cols += _degeneracy_columns(section)
    cols += [
        Column("final loss", lambda r: _fmt(r["final_loss"], 3)),
        Column("final-loss sd (seeds)", lambda r: _fmt(r["final_loss_std"], 3)),
        Column("spikes/run", lambda r: _fmt(r["loss_spikes_per_run"], 1)),
        Column("grad-norm CV", lambda r: _fmt(r["grad_norm_cv"], 2)),
        Column("diverged", lambda r: f"{r['diverged']}/{r['n_seeds']}"),
    ]
    if any(r["tar_mean"] is not None for r in rows):
        cols.append(Column("TAR", lambda r: _fmt(r["tar_mean"], 2)))
    cols += [
        Column("train tok/s", lambda r: _fmt(r["train_tokens_per_s"], 0)),
        Column("wall min", lambda r: _fmt(r["wall_min"], 1)),
    ]
    return cols


def _best(col: Column, rows: list[dict[str, Any]]) -> float | None:
    """The best value of a metric column among the method rows; None when they do not differ."""
    values = [v for r in rows if col.value and (v := col.value(r)) is not None]
    return max(values, key=lambda v: col.sign * v) if len(set(values)) > 1 else None


def table_cells(section: Section) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Headers and (text, style) cells of one section, reference rows first; style is 'ref' for reference
    rows, 'best' for the best value of a metric column among the methods, else ''."""
    cols = _columns(section)
    rows = [g.row for g in section.groups]
    best = [_best(col, rows) for col in cols]
    references = [
        [(one_line(col.text(r)) if col.reference else "", "ref") for col in cols] for r in section.references
    ]
    methods = [
        [
            (one_line(col.text(r)), "best" if b is not None and col.value(r) == b else "")
            for col, b in zip(cols, best, strict=True)
        ]
        for r in rows
    ]
    return [one_line(c.title) for c in cols], references + methods


def one_line(text: str) -> str:
    """Text with every run of whitespace (newlines included) as one space: a cell or a line stays one."""
    return " ".join(str(text).split())


_MD_SPECIAL = "\\`*_<>|"
"""Characters that markdown would read as emphasis, code, HTML or a cell boundary."""


def md_escape(text: str) -> str:
    """Markdown text that renders as written: one line, its punctuation backslash-escaped (names from
    plugins may hold `|`, `_`, `<`, ...)."""
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in one_line(text))


def _styled(text: str, style: str, wrap: dict[str, str]) -> str:
    """`text` inside the format's wrapper for `style` ('{}' marks where the text goes)."""
    return wrap[style].format(text) if style in wrap and text else text


def section_lines(s: Section) -> list[str]:
    """The notes and floor verdict under a section's table."""
    return [*(f"note: {n}" for n in s.notes), *([s.floor_verdict] if s.floor_verdict else [])]


def _md(sections: list[Section]) -> str:
    out = []
    wrap = {"best": "**{}**", "ref": "*{}*"}
    for s in sections:
        headers, cells = table_cells(s)
        out += [f"**{md_escape(s.eval_set)}**: {md_escape(s.description)}", ""]
        out += ["| " + " | ".join(map(md_escape, headers)) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(_styled(md_escape(t), st, wrap) for t, st in row) + " |" for row in cells]
        out += [*(f"- {md_escape(line)}" for line in section_lines(s)), ""]
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
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        "|": r"\textbar{}",
        "±": r"$\pm$",
        "×": r"$\times$",
        "→": r"$\to$",
        "Δ": r"$\Delta$",
        "·": r"$\cdot$",
        "≤": r"$\le$",
        "≥": r"$\ge$",
        LOWER: r"$\downarrow$",
        "⚠": "(!)",
        SIGNIFICANT: r"$^\dagger$",
    }
)


def _latex(sections: list[Section]) -> str:
    out = ["% speckd-bench leaderboard; needs \\usepackage{booktabs}"]
    wrap = {"best": "\\textbf{{{}}}", "ref": "\\textit{{{}}}"}
    for s in sections:
        headers, cells = table_cells(s)
        esc = lambda t: t.translate(_LATEX)  # noqa: E731
        spec = "l" * (2 if headers[1] == "settings" else 1)
        out += [
            f"% {one_line(s.eval_set)}: {one_line(s.description)}",
            "\\begin{tabular}{" + spec + "r" * (len(headers) - len(spec)) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in headers) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(_styled(esc(t), st, wrap) for t, st in row) + " \\\\" for row in cells]
        out += ["\\bottomrule", "\\end{tabular}", *(f"% {one_line(line)}" for line in section_lines(s)), ""]
    out.append(f"% {LEGEND}")
    return "\n".join(out) + "\n"


def _html(sections: list[Section]) -> str:
    out = ['<div class="speckd-leaderboard">']
    wrap = {"best": "<strong>{}</strong>", "ref": "<em>{}</em>"}
    for s in sections:
        headers, cells = table_cells(s)
        out += [
            f"<table>\n<caption>{html.escape(s.eval_set)}: {html.escape(s.description)}</caption>",
            "<thead>",
        ]
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        out += ["</thead>", "<tbody>"]
        for row in cells:
            out.append(
                "<tr>" + "".join(f"<td>{_styled(html.escape(t), st, wrap)}</td>" for t, st in row) + "</tr>"
            )
        out += ["</tbody>", "</table>"]
        out += [f"<p>{html.escape(line)}</p>" for line in section_lines(s)]
    out += [f"<p>{html.escape(LEGEND)}</p>", "</div>"]
    return "\n".join(out) + "\n"


def _rows(sections: list[Section]) -> list[dict[str, Any]]:
    """Every row of every section, reference rows first in each."""
    return [row for s in sections for row in [*s.references, *(g.row for g in s.groups)]]


_CSV_PER_METRIC = {
    "mean": lambda r, m: r["metrics"][m]["mean"],
    "std": lambda r, m: r["metrics"][m]["std"],
    "eval_seed_std": lambda r, m: r["metrics"][m].get("eval_seed_std"),
    **{
        f"delta{suffix}": lambda r, m, k=k: (r.get("delta", {}).get(m) or {}).get(k)
        for suffix, k in [
            ("", "diff"),
            ("_low", "low"),
            ("_high", "high"),
            ("_p", "p"),
            ("_p_holm", "p_holm"),
            ("_significant", "significant"),
        ]
    },
    "bootstrap_low": lambda r, m: (r.get("prompt_bootstrap", {}).get(m) or {}).get("low"),
    "bootstrap_high": lambda r, m: (r.get("prompt_bootstrap", {}).get(m) or {}).get("high"),
}
_CSV_TAIL = (
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
_DEGENERACY = ("empty", "distinct_1", "distinct_2", "repetition")


def _csv_line(r: dict[str, Any], metrics: list[str]) -> list[Any]:
    figures = r["degeneracy"] or {}
    line: list[Any] = [
        r["kind"],
        r["eval_set"],
        r["task"],
        r["teacher"],
        r["student"],
        r["method"] or r["label"],
        json.dumps(r["settings"]) if r.get("settings") else "",
        r.get("n_seeds", r.get("n_runs")),
        " ".join(map(str, r.get("seeds", []))),
    ]
    line += [get(r, m) if m in r["metrics"] else None for m in metrics for get in _CSV_PER_METRIC.values()]
    line += [figures.get(k) for k in _DEGENERACY] + ["; ".join(r["degenerate"])]
    return line + [r.get(k) for k in _CSV_TAIL]


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for no value; text that a spreadsheet would run as a formula gets a quote."""
    if value is None:
        return ""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv(sections: list[Section]) -> str:
    """One flat, numeric table over every section, reference rows included (empty cell = no value)."""
    metrics = list(dict.fromkeys(m for s in sections for m in s.metrics))
    head = ["kind", "eval_set", "task", "teacher", "student", "method", "settings", "n_seeds", "seeds"]
    head += [f"{m}_{k}" for m in metrics for k in _CSV_PER_METRIC]
    head += [*_DEGENERACY, "degenerate", *_CSV_TAIL]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    for r in _rows(sections):
        writer.writerow([_csv_cell(v) for v in _csv_line(r, metrics)])
    return buf.getvalue()


def _rich(sections: list[Section]) -> RichGroup:
    parts: list[Any] = []
    styles = {"best": "bold green", "ref": "italic cyan", "": ""}
    for s in sections:
        headers, cells = table_cells(s)
        table = Table(title=Text(f"{s.eval_set}: {s.description}"), title_justify="left")
        for i, title in enumerate(headers):
            table.add_column(title, overflow="fold", justify="left" if i < 2 else "right")
        for row in cells:
            table.add_row(*(Text(t, style=styles[st]) for t, st in row))
        parts.append(table)
        parts += [Text(line, style="yellow") for line in section_lines(s)]
    parts.append(Text(LEGEND, style="dim"))
    return RichGroup(*parts)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")


def render(sections: list[Section], fmt: str) -> str | RichGroup:
    check_format(fmt)
    if fmt == "json":
        return json.dumps(_rows(sections), indent=2) + "\n"
    return {"md": _md, "csv": _csv, "latex": _latex, "html": _html, "rich": _rich}[fmt](sections)
