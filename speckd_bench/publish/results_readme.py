"""The results README: the findings (claims.py), the compact leaderboard table and a detail table per
column group, plots and the facts a reader needs to trust and regenerate them (command, machine,
versions, sizes, wall time, and whether a method's difference to a baseline is significant). Every number
comes from the records; the notes placed under the title give context only.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from speckd_bench.caches import atomic_write_text
from speckd_bench.evaluation.teacher_answers import answers_path, write_answers
from speckd_bench.formatting import NO_VALUE, interval, md_escape, mean_std, metric_digits
from speckd_bench.leaderboard.render import MD_WIDTH, md_details, render
from speckd_bench.leaderboard.runs import is_finite
from speckd_bench.leaderboard.sections import Group, Section
from speckd_bench.leaderboard.stats import ALPHA, MIN_SEEDS_SIGNIFICANT, compare_family
from speckd_bench.publish.claims import findings
from speckd_bench.publish.plots import curve_paths, write_plots
from speckd_bench.records.run_record import RunRecord


def _records(sections: list[Section]) -> list[RunRecord]:
    seen: dict[str, dict[str, Any]] = {}
    for s in sections:
        for g in s.groups:
            for run in g.runs:
                seen.setdefault(str(run.record.run_id), run.record)
    return list(seen.values())


def _machines(records: list[RunRecord]) -> list[str]:
    def describe(hw: dict[str, Any]) -> str:
        device = hw.get("gpu") or hw.get("device", "?")
        return (
            f"{hw.get('platform', '?')} ({hw.get('processor', '?')}), {hw.get('cpu_count', '?')} CPU cores, "
            f"{hw.get('torch_threads', '?')} torch threads, device {device}"
        )

    counts = Counter(describe(r.hardware) for r in records)
    return [f"{m} ({n} runs)" for m, n in counts.items()]


def _versions(records: list[RunRecord]) -> list[str]:
    counts = Counter(
        ", ".join(f"{k} {v}" for k, v in r.versions.items()) + f", git commit {(r.git_commit or 'none')[:12]}"
        for r in records
    )
    return [f"{v} ({n} runs)" for v, n in counts.items()]


def _models(records: list[RunRecord]) -> list[str]:
    found = set()
    for r in records:
        m = r.models
        if "teacher_params" in m:
            found.add(
                f"teacher {m['teacher']} ({m['teacher_params'] / 1e6:.1f}M parameters) → student "
                f"{m['student']} ({m['student_params'] / 1e6:.1f}M parameters; {m.get('student_init', '')})"
            )
    return sorted(found)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds / 3600:.2f} h)"


def _verdict(section: Section, group: Group, base: Group, metric: str) -> str:
    row, base_row, digits = group.row, base.row, metric_digits(metric)
    a, b = row.metrics[metric], base_row.metrics[metric]
    head = (
        f"On {md_escape(section.eval_set)} ({md_escape(metric)}), {md_escape(group.label)} scores "
        f"{mean_std(a.mean, a.std, digits)} (n={row.n}) against {md_escape(base.label)}'s "
        f"{mean_std(b.mean, b.std, digits)} (n={base_row.n})"
    )
    delta = row.delta.get(metric)
    if delta is None:
        return f"{head}; no comparison was possible ({metric} is missing from its runs)."
    if delta.low is None:
        return (
            f"{head}: a difference of {delta.diff:+.{digits}f}; too few training seeds (or no seed-to-seed "
            "variation) for a t-test."
        )
    test = "paired" if delta.paired else "Welch"
    verdict = "significant" if delta.significant else "not significant"
    return (
        f"{head}: a difference of {delta.diff:+.{digits}f} with a {delta.confidence:.1%} {test} t-interval "
        f"over training seeds of {interval(delta.low, delta.high, digits)} and a Holm-corrected p of "
        f"{delta.p_holm:.3g}: {verdict} at this scale (that needs p < {ALPHA:g} after Holm and "
        f"≥ {MIN_SEEDS_SIGNIFICANT} seeds on each side)."
    )


def _paired_with_init(group: Group, eval_set: str, metric: str) -> tuple[list[float], list[float]]:
    """Per run of the group with finite scores: (score after training, score of the init it started
    from)."""
    pairs = [
        (m["after"]["metrics"].get(metric), m["before"].get("init", {}).get("metrics", {}).get(metric))
        for m in (run.record.metrics[eval_set] for run in group.runs)
    ]
    kept = [(a, b) for a, b in pairs if is_finite(a) and is_finite(b)]
    return [a for a, _ in kept], [b for _, b in kept]


def init_gains(section: Section) -> list[str]:
    """Did each method move the student away from its init? Per method of a section, the mean change of
    the first metric over its runs with a paired t-interval over training seeds, Holm-corrected across the
    section's methods: a markdown table."""
    metric = section.metrics[0]
    digits = metric_digits(metric)
    groups = [g for g in section.groups if _paired_with_init(g, section.eval_set, metric)[0]]
    if not groups:
        return []
    family = [(*_paired_with_init(g, section.eval_set, metric), True) for g in groups]
    lines = [
        f"Change of {md_escape(metric)} from the init student, {md_escape(section.eval_set)} (paired t over "
        "training seeds, Holm-corrected across the methods):",
        "",
        "| method | n | after − init | Holm interval | Holm p | |",
        "|---|---|---|---|---|---|",
    ]
    for g, cmp in zip(groups, compare_family(family), strict=True):
        holm = (
            NO_VALUE if cmp.low is None else f"{interval(cmp.low, cmp.high, digits)} ({cmp.confidence:.1%})"
        )
        p = NO_VALUE if cmp.p_holm is None else f"{cmp.p_holm:.3g}"
        verdict = "significant" if cmp.significant else "not significant"
        cells = [md_escape(g.label), str(cmp.n), f"{cmp.diff:+.{digits}f}", holm, p, verdict]
        lines.append(f"| {' | '.join(cells)} |")
    return [*lines, ""]


def significance(sections: list[Section], method: str, baseline: str) -> list[str]:
    """One sentence per section that holds both `method` and `baseline`."""
    lines = []
    for s in sections:
        base = s.baseline_group
        if base is None or base.method != baseline:
            continue
        lines += [_verdict(s, g, base, s.metrics[0]) for g in s.groups if g.method == method]
    return lines or [f"No section holds runs of both {method} and {baseline}: no comparison."]


def setup_facts(sections: list[Section]) -> list[str]:
    """Machine, versions, models, wall time and dates of the runs behind the sections, one fact a line."""
    records = _records(sections)
    wall = sum(r.timings.get("wall_s", 0.0) for r in records)
    per_method = Counter()
    for r in records:
        per_method[str(r.method)] += r.timings.get("wall_s", 0.0)
    created = sorted(r.created or "" for r in records)
    return [
        *(f"Machine: {m}" for m in _machines(records)),
        *(f"Versions: {v}" for v in _versions(records)),
        *(f"Models: {m}" for m in _models(records)),
        "Sizes, decoding and eval seeds: the protocol line above each table below",
        f"Wall time: {_minutes(wall)} in total over {len(records)} runs "
        f"({', '.join(f'{md_escape(m)} {t / 60:.1f} min' for m, t in sorted(per_method.items()))})",
        f"Runs created {created[0]} to {created[-1]}" if created else "No runs.",
    ]


def details(sections: list[Section]) -> list[str]:
    """The detail tables under the compact one: per section, a table for each column group with data."""
    tables = [line for s in sections for line in md_details(s)]
    if not tables:
        return []
    intro = (
        "The columns of the other groups, a table per group (split where one would be wider than "
        f"{MD_WIDTH} characters), rows without a value in the group left out; `speckd-bench table --columns "
        "GROUP` shows them beside the main metric."
    )
    return ["## Details", "", intro, "", *tables]


def _image(path: Path, out: Path) -> str:
    return f"![{path.stem}]({Path(os.path.relpath(path, out.parent)).as_posix()})"


def teacher_keys(records: list[RunRecord]) -> set[tuple[str, str]]:
    """(eval set, teacher score key) of every reference row the records name."""
    return {
        (eval_set, key)
        for r in records
        for eval_set, per_set in r.metrics.items()
        if (key := per_set.get("reference", {}).get("teacher", {}).get("key"))
    }


def answers_facts(results_dir: Path, out: Path, keys: set[tuple[str, str]]) -> list[str]:
    """Where the teacher's reference answers are kept beside the README, or that they are not."""
    facts = []
    for eval_set, key in sorted(keys):
        path = answers_path(results_dir, eval_set, key)
        if path.is_file():
            link = Path(os.path.relpath(path, out.parent)).as_posix()
            facts.append(
                f"Teacher's reference answers on {md_escape(eval_set)}: [{link}]({link}) (a rebuild of the "
                "reference rows is compared with them and warns when an answer differs)"
            )
        else:
            facts.append(
                f"Teacher's reference answers on {md_escape(eval_set)} (key {key}): not kept here (the runs "
                "were made before answers were kept, or their cache is not on this machine)"
            )
    return facts


def write_results_readme(
    sections: list[Section],
    results_dir: Path,
    out: Path,
    *,
    baseline: str,
    method: str,
    command: str | None,
    notes: str | None = None,
) -> list[Path]:
    """Write the plots under results_dir/plots and the README at `out`; returns every file written."""
    plots = write_plots(sections, results_dir / "plots")
    records = _records(sections)
    keys = teacher_keys(records)
    answers = write_answers(results_dir, keys)
    lines = [
        "# Reference leaderboard",
        "",
        f"Generated by `speckd-bench report` from the {len(records)} run records under `runs/`; do not edit "
        "by hand: every number below is recomputed from the records.",
        "",
        *([notes.strip(), ""] if notes else []),
        *findings(sections, method),
        "## Regenerate",
        "",
        "```bash",
        "make leaderboard          # the reference runs, then this file",
        "make leaderboard-report   # this file and the plots only, from the records already here",
        "```",
        "",
        f"The runs were made by: `{command}`" if command else "The command that made the runs was not given.",
        "",
        f"## {md_escape(method)} against {md_escape(baseline)}",
        "",
        *significance(sections, method, baseline),
        "",
        "## Against the init student",
        "",
        *(line for s in sections for line in init_gains(s)),
        "## Setup",
        "",
        *(f"- {fact}" for fact in setup_facts(sections)),
        *(f"- {fact}" for fact in answers_facts(results_dir, out, keys)),
        "",
        "## Table",
        "",
        render(sections, "md"),
        *details(sections),
    ]
    curve_files = list(
        dict.fromkeys(p for _, paths in curve_paths(sections, results_dir / "plots") for p in paths)
    )
    if curve_files:
        lines += [
            "## Learning curves",
            "",
            "Each method's fidelity to the teacher during training (teacher-forced on a fixed subset of the "
            "eval rows, every few optimiser steps): the mean over training seeds, the band from the lowest "
            "to the highest seed.",
            "",
            *(_image(p, out) for p in curve_files),
            "",
        ]
    lines += ["## Plots", "", *(_image(p, out) for p in plots if p not in curve_files)]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return [*plots, *answers, out]
