"""The whole default run (`speckd-bench run --task dolly --method speckd`) in one process: first from
cold caches (an empty cache directory: the GGUF conversion, the warm start and the teacher's scores are
all built), then again with the caches warm; with `teacher_cache`, twice more with the teacher top-k
cache (built, then hit). Wall, training and evaluation seconds come from the runs' own records.

    speckd-bench bench default-run            # cold + warm (measured: docs/benchmarks/cpu/default_run_*.md)
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 speckd-bench bench default-run \
        --set model.teacher_dtype=float32     # as on a CPU without AVX-512 (no native bfloat16)
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from speckd_bench.benchmarks.common import machine_header, markdown_table
from speckd_bench.config.run_config import native_bf16
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.engine.recipe import build_run_config, run_once
from speckd_bench.methods.discovery import discover_methods
from speckd_bench.records.run_record import RunRecord

# (label, overrides), run in this order on one cache directory that starts empty
VARIANTS = (("cold caches", {}), ("warm caches", {}))
TEACHER_CACHE_VARIANTS = (
    ("warm, teacher cache built", {"train.teacher_cache": True}),
    ("warm, teacher cache hit", {"train.teacher_cache": True}),
)


def _run(task: str, method: str, results: str, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = build_run_config(method=method, overrides={"task": task, "results_dir": results, **overrides})
    record = RunRecord.read(run_once(cfg, quiet=True))
    t, cache = record.timings, record.teacher_cache
    return {
        "cache": ("hit" if cache["hit"] else "built") if cache["used"] else "-",
        "wall_s": t["wall_s"],
        "train_s": t["train_s"],
        "eval_s": t["eval_s"],
        "train_tokens_per_s": t["train_tokens_per_s"],
        "metric": record.metrics[task]["after"]["metrics"][record.main_metric],
        "distinct_2": record.metrics[task]["after"]["degeneracy"]["distinct_2"],
        "metric_name": record.main_metric,
        "teacher_dtype": record.config["model"]["teacher_dtype"],
    }


def main(
    task: str, method: str, overrides: dict[str, Any], teacher_cache: bool = False
) -> tuple[list[dict], dict[str, Any]]:
    discover_tasks()
    discover_methods()
    rows = []
    previous = os.environ.get("SPECKD_CACHE_DIR")
    with tempfile.TemporaryDirectory() as results, tempfile.TemporaryDirectory() as cold:
        os.environ["SPECKD_CACHE_DIR"] = cold
        try:
            for label, extra in VARIANTS + (TEACHER_CACHE_VARIANTS if teacher_cache else ()):
                rows.append({"variant": label, **_run(task, method, results, {**overrides, **extra})})
        finally:
            if previous is None:
                os.environ.pop("SPECKD_CACHE_DIR", None)
            else:
                os.environ["SPECKD_CACHE_DIR"] = previous
    facts = {
        "run": f"speckd-bench run --task {task} --method {method} "
        + " ".join(f"--set {k}={v}" for k, v in overrides.items()),
        "cpu capability": f"{torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native_bf16()}, "
        f"ONEDNN_MAX_CPU_ISA {os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}",
        "teacher dtype": rows[0]["teacher_dtype"],
        "metric": rows[0]["metric_name"] + " after training",
    }
    return rows, facts


def format_table(rows: list[dict], facts: dict[str, Any]) -> str:
    cols = [
        ("variant", "variant", "{}"),
        ("cache", "teacher cache", "{}"),
        ("wall_s", "wall s", "{:.1f}"),
        ("train_s", "train s", "{:.1f}"),
        ("train_tokens_per_s", "train tok/s", "{:.0f}"),
        ("eval_s", "eval s", "{:.1f}"),
        ("metric", "metric", "{:.2f}"),
        ("distinct_2", "distinct-2", "{:.2f}"),
    ]
    return machine_header("default run", facts) + "\n\n" + markdown_table(rows, cols)
