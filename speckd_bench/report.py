"""Leaderboard: group run records (configs equal but for the seed), aggregate over seeds, render."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from typing import Any

from rich.table import Table

from speckd_bench.config import NON_RESULT_KEYS, flatten

# Config keys that never split a group: the seed is what we average over; the others do not change results.
_NOT_SETTINGS = {"seed", *NON_RESULT_KEYS}


def _settings(record: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(record["config"])
    if record["status"] != "complete":  # interrupted runs (--include-interrupted) form their own rows
        flat["status"] = record["status"]
    return {k: json.dumps(v) for k, v in flat.items() if k not in _NOT_SETTINGS}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _main_metric(record: dict[str, Any], stage: str) -> float | None:
    per_set = record["metrics"][record["task"]]
    name = record["main_metric"]
    if stage == "after":
        return per_set.get("after", {}).get("metrics", {}).get(name)
    return per_set["before"].get(stage, {}).get("metrics", {}).get(name)


def _collect(records: list[dict[str, Any]], path: str) -> list[float]:
    out = []
    for r in records:
        value: Any = r
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(float(value))
    return out


def leaderboard(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of records whose configs differ only by seed, best main metric first."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[json.dumps(_settings(record), sort_keys=True)].append(record)
    all_settings = [_settings(g[0]) for g in groups.values()]
    varying = sorted(k for k in set().union(*all_settings) if len({s.get(k) for s in all_settings}) > 1)
    rows = []
    for members in groups.values():
        first = members[0]
        after, after_std = _mean_std([v for r in members if (v := _main_metric(r, "after")) is not None])
        init, _ = _mean_std([v for r in members if (v := _main_metric(r, "init")) is not None])
        raw, _ = _mean_std([v for r in members if (v := _main_metric(r, "raw")) is not None])
        final_loss, final_loss_std = _mean_std(_collect(members, "training.final_loss"))
        tars = _collect(members, "training.tar_mean")
        settings = _settings(first)
        distinguishing = {
            k: json.loads(settings[k])
            for k in varying
            if k in settings and k not in ("task", "method.name", "model.teacher", "model.student")
        }
        rows.append(
            {
                "task": first["task"],
                "method": first["method"],
                "teacher": first["config"]["model"]["teacher"],
                "student": first["config"]["model"]["student"],
                "settings": distinguishing,
                "metric": first["main_metric"],
                "n_seeds": len(members),
                "seeds": sorted(r["seed"] for r in members),
                "mean": after,
                "std": after_std,
                "raw": raw,
                "init": init,
                "final_loss": final_loss,
                "final_loss_std": final_loss_std,
                "loss_spikes": sum(_collect(members, "training.loss_spikes")),
                "grad_norm_mean": _mean_std(_collect(members, "training.grad_norm_mean"))[0],
                "grad_norm_max": max(_collect(members, "training.grad_norm_max"), default=None),
                "diverged": sum(bool(r["training"].get("diverged")) for r in members),
                "tar_mean": statistics.fmean(tars) if tars else None,
                "train_tokens_per_s": _mean_std(_collect(members, "timings.train_tokens_per_s"))[0],
                "wall_min": (_mean_std(_collect(members, "timings.wall_s"))[0] or 0.0) / 60,
                "run_ids": sorted(r["run_id"] for r in members),
            }
        )
    rows.sort(key=lambda r: (r["task"], -(r["mean"] if r["mean"] is not None else float("-inf"))))
    return rows


COLUMNS = [
    ("task", "task"),
    ("method", "method"),
    ("settings", "settings"),
    ("metric", "metric"),
    ("score", "mean ± std"),
    ("n_seeds", "n"),
    ("init", "init"),
    ("raw", "raw"),
    ("final_loss", "final loss"),
    ("final_loss_std", "loss std (seeds)"),
    ("loss_spikes", "spikes"),
    ("grad_norm_mean", "grad norm"),
    ("grad_norm_max", "grad max"),
    ("diverged", "diverged"),
    ("tar_mean", "TAR"),
    ("train_tokens_per_s", "train tok/s"),
    ("wall_min", "wall min"),
]


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "score":
        if row["mean"] is None:
            return "-"
        return f"{row['mean']:.2f} ± {row['std']:.2f}"
    if key == "settings":
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row["settings"].items()) or "-"
    value = row[key]
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render(rows: list[dict[str, Any]], fmt: str) -> str | Table:
    headers = [title for _, title in COLUMNS]
    cells = [[_cell(r, key) for key, _ in COLUMNS] for r in rows]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines) + "\n"
    table = Table(title="speckd-bench leaderboard (mean ± std over training seeds)")
    for title in headers:
        table.add_column(title, overflow="fold")
    for c in cells:
        table.add_row(*c)
    return table
