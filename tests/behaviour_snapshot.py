"""Behaviour snapshot for refactors: tiny runs of several methods and the default preset's first steps,
reduced to what must not change (records less times, versions, ids and machine facts; training logs less
speeds and clocks; samples), written as one JSON file per run. Compare two snapshots with `diff -r`.

    python tests/behaviour_snapshot.py OUT_DIR [--data-dir DIR] [--skip-default]
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

TINY_METHODS = [
    ["sft"],
    ["fkl"],
    ["rkl", "--set", "method.gate=speckd"],
    ["speckd"],
    ["speckd", "--set", "method.rule=spec"],
    ["gkd"],
    ["seqkd"],
    ["skd"],
    ["distillm"],
]
VOLATILE = {
    "run_id",
    "created",
    "finished",
    "started",
    "timings",
    "versions",
    "hardware",
    "wall_s",
    "tok_s",
    "tokens_per_s",
    "time",
    "elapsed_s",
    "seconds",
    "git_commit",
    "eval_tok_s",
    "train_tok_s",
    "path",
    "results_dir",
    "cache_dir",
    "generation_s",
    "duration_s",
    "ts",
    "t",
}


def _scrub(value: Any) -> Any:
    """The value less clocks, machine facts and temporary paths (which differ between any two runs)."""
    if isinstance(value, dict):
        return {
            k: _scrub(v)
            for k, v in value.items()
            if k not in VOLATILE and "seconds" not in k and not k.endswith(("_s", "_at"))
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and value.startswith(tempfile.gettempdir()):
        return "<temporary path>"
    return value


def _read_jsonl(path: Path) -> list[Any]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _snapshot_run(results: Path) -> dict[str, Any]:
    (run,) = sorted((results / "runs").iterdir())
    return {
        "record": _scrub(json.loads((run / "record.json").read_text())),
        "train_log": _scrub(_read_jsonl(run / "train_log.jsonl")),
        "samples": _scrub(_read_jsonl(run / "samples.jsonl")),
    }


def _run(args: list[str], results: Path, env: dict[str, str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "speckd_bench",
        "run",
        "--task",
        "dolly",
        "--quiet",
        "--results-dir",
        str(results),
    ]
    subprocess.run([*cmd, *args], check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-dir", default=os.environ.get("SPECKD_DATA_DIR", ""))
    parser.add_argument("--skip-default", action="store_true")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SPECKD_CACHE_DIR": str(Path(tmp) / "cache"), "SPECKD_DATA_DIR": opts.data_dir}
        points = [
            (f"tiny-{'-'.join(m).replace('method.', '')}", ["--preset", "tiny", "--method", *m])
            for m in TINY_METHODS
        ]
        if not opts.skip_default:
            points.append(
                (
                    "default-speckd",
                    [
                        "--method",
                        "speckd",
                        "--set",
                        "train.max_steps=2",
                        "--max-eval-examples",
                        "4",
                        "--set",
                        "train.init_rows=16",
                    ],
                )
            )
        for name, args in points:
            results = Path(tmp) / name
            _run([*args, "--data-dir", opts.data_dir], results, env)
            (opts.out / f"{name}.json").write_text(
                json.dumps(_snapshot_run(results), indent=1, sort_keys=True)
            )
            print(name, "done", flush=True)


if __name__ == "__main__":
    main()
