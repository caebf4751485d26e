"""The whole default run (`speckd-bench run --task dolly --method speckd`) three times in one process:
without the teacher cache, with it (the first such run builds it unless an earlier run did), and with it
again (a cache hit). Wall, training and evaluation seconds come from the runs' own records; the shared
warm start is built by the first run when missing and reused by the others, so compare train_s.

    speckd-bench bench default-run            # about 3 x 2 minutes on 2 CPU cores with the caches warm
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from speckd_bench.benchmarks.common import machine_header, markdown_table
from speckd_bench.config import build_config
from speckd_bench.methods import discover_methods, method_defaults
from speckd_bench.runner import run_once
from speckd_bench.tasks import discover_tasks, run_defaults

VARIANTS = (
    ("teacher cache off", {"train.teacher_cache": False}),
    ("teacher cache on (first)", {"train.teacher_cache": True}),
    ("teacher cache on (again)", {"train.teacher_cache": True}),
)


def main(task: str, method: str, overrides: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    discover_tasks()
    discover_methods()
    rows = []
    with tempfile.TemporaryDirectory() as results:
        for label, extra in VARIANTS:
            cfg = build_config(
                method=method,
                overrides={"task": task, "results_dir": results, **overrides, **extra},
                method_defaults=method_defaults,
                task_defaults=run_defaults,
            )
            record = json.loads(Path(run_once(cfg, quiet=True)).read_text())
            t, cache = record["timings"], record["teacher_cache"]
            rows.append(
                {
                    "variant": label,
                    "cache": ("hit" if cache["hit"] else "built") if cache["used"] else "-",
                    "wall_s": t["wall_s"],
                    "train_s": t["train_s"],
                    "eval_s": t["eval_s"],
                    "train_tokens_per_s": t["train_tokens_per_s"],
                    "metric": record["metrics"][task]["after"]["metrics"][record["main_metric"]],
                }
            )
    base = rows[0]["train_s"]
    for row in rows:
        row["train_vs_off"] = row["train_s"] / base
    facts = {
        "run": f"speckd-bench run --task {task} --method {method} "
        + " ".join(f"--set {k}={v}" for k, v in overrides.items()),
        "metric": record["main_metric"] + " after training (the cache approximates the teacher: top-"
        f"{cfg.train.teacher_cache_k} exact, the rest shaped like the student's tail)",
    }
    return rows, facts


def format_table(rows: list[dict], facts: dict[str, Any]) -> str:
    cols = [
        ("variant", "variant", "{}"),
        ("cache", "teacher cache", "{}"),
        ("wall_s", "wall s", "{:.1f}"),
        ("train_s", "train s", "{:.1f}"),
        ("train_vs_off", "train x off", "{:.2f}"),
        ("train_tokens_per_s", "train tok/s", "{:.0f}"),
        ("eval_s", "eval s", "{:.1f}"),
        ("metric", "metric", "{:.2f}"),
    ]
    return machine_header("default run", facts) + "\n\n" + markdown_table(rows, cols)
