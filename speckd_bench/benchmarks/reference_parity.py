"""Are the teacher's reference answers the same on another CPU? The teacher decodes the eval rows of a
preset greedily in a child process per (CPU kernel path, dtype), and the answers are compared across the
kernel paths: `ATEN_CPU_CAPABILITY=avx2` (what a CPU without AVX-512 runs) against the machine's native
one. A dtype whose answers differ between kernel paths cannot give committed reference rows that another
machine reproduces.

    python -m speckd_bench.benchmarks.reference_parity [--preset reference] [--rows 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from speckd_bench.benchmarks.common import machine_header, markdown_table
from speckd_bench.data.examples import build_examples
from speckd_bench.data.rows import load_rows
from speckd_bench.data.tasks import TASKS, discover_tasks
from speckd_bench.engine.recipe import build_run_config
from speckd_bench.evaluation.generate import generate
from speckd_bench.evaluation.reference import reference_teacher
from speckd_bench.methods.discovery import discover_methods
from speckd_bench.models.loading import load_teacher

KERNELS = ("native", "avx2")
DTYPES = ("float32", "bfloat16", "float32-from-bfloat16")
"""float32-from-bfloat16: what eval.reference_dtype=float32 decodes with a bfloat16 teacher (its rounded
weights, computed in float32)."""
COLUMNS = [
    ("dtype", "teacher dtype", "{}"),
    ("kernels", "kernel paths", "{}"),
    ("rows", "rows", "{}"),
    ("differ", "answers that differ", "{}"),
    ("seconds", "decode s", "{}"),
]


def decode(preset: str, task: str, rows: int, dtype: str) -> dict[str, Any]:
    """The teacher's greedy answers to the first `rows` eval rows of `task` under `preset`."""
    discover_tasks()
    discover_methods()
    cfg = build_run_config(method="fkl", preset=preset, overrides={"task": task})
    teacher, tokenizer, _ = load_teacher(cfg.model.teacher)
    if dtype == "float32-from-bfloat16":
        teacher = reference_teacher(teacher.to(torch.bfloat16), "float32").eval()
    else:
        teacher = teacher.to(getattr(torch, dtype)).eval()
    spec = TASKS.get(task)
    examples = build_examples(spec, load_rows(spec, "eval", cfg.data)[:rows], tokenizer, cfg.data)
    gen = generate(teacher, tokenizer, [e.prompt_ids for e in examples], cfg.eval, 10, "reference", True)
    capability = torch.backends.cpu.get_cpu_capability()
    return {"capability": capability, "dtype": dtype, "texts": gen.texts, "seconds": gen.seconds}


def _child(kernel: str, dtype: str, opts: argparse.Namespace, out: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernel != "native":
        env["ATEN_CPU_CAPABILITY"] = kernel
    cmd = [
        sys.executable,
        "-m",
        __spec__.name,
        "--child",
        dtype,
        "--preset",
        opts.preset,
        "--task",
        opts.task,
    ]
    subprocess.run([*cmd, "--rows", str(opts.rows), "--out", str(out)], env=env, check=True)
    return json.loads(out.read_text())


def compare(opts: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """One table row per dtype of opts.dtypes: answers that differ between the kernel paths (each decode
    kept in `work`, where a later call finds it instead of decoding again)."""
    table = []
    for dtype in opts.dtypes:
        runs = []
        for kernel in KERNELS:
            out = work / f"{opts.preset}-{opts.task}-{opts.rows}-{kernel}-{dtype}.json"
            runs.append(json.loads(out.read_text()) if out.is_file() else _child(kernel, dtype, opts, out))
        differ = sum(a != b for a, b in zip(runs[0]["texts"], runs[1]["texts"], strict=True))
        table.append(
            {
                "dtype": dtype,
                "kernels": " vs ".join(r["capability"] for r in runs),
                "rows": len(runs[0]["texts"]),
                "differ": differ,
                "seconds": " / ".join(f"{r['seconds']:.0f}" for r in runs),
            }
        )
    return table


def report(preset: str, task: str, rows: int, work: Path | None, dtypes: tuple[str, ...] = DTYPES) -> str:
    """The machine and the table: answers that differ between the kernel paths, per dtype. The decodes
    run in child processes (ATEN_CPU_CAPABILITY is read once, at import) and are kept in `work`."""
    opts = argparse.Namespace(preset=preset, task=task, rows=rows, dtypes=dtypes)
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        table = compare(opts, work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            table = compare(opts, Path(tmp))
    facts = {"preset": preset, "task": task, "decoding": "greedy, the preset's eval settings"}
    header = machine_header("Reference-row parity across CPU kernel paths", facts)
    return f"{header}\n\n{markdown_table(table, COLUMNS)}"


def main() -> None:
    """A child's decode (`--child DTYPE --out FILE`), or the whole comparison printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--task", default="dolly")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--work", type=Path, help="keep each decode here and reuse it (default: a temp dir)")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="the dtypes compared (default: all)")
    parser.add_argument("--child", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        opts.out.write_text(json.dumps(decode(opts.preset, opts.task, opts.rows, opts.child)))
    else:
        print(report(opts.preset, opts.task, opts.rows, opts.work, tuple(opts.dtype or DTYPES)))


if __name__ == "__main__":
    main()
