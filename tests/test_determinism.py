"""Same seed, same config, CPU: identical records apart from timings, run ids, dates and paths."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app

pytestmark = pytest.mark.slow

runner = CliRunner()
FILES = ("train_log.jsonl", "samples.jsonl")
VOLATILE = {"run_id", "created", "timings", "seconds", "tokens_per_s", "seconds_when_built", "path"}


def stable(value: Any) -> Any:
    """value without the keys that legitimately differ between two identical runs."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def test_two_runs_of_one_seed_give_identical_records(tmp_path, data_dir, fresh_cache, monkeypatch):
    results = tmp_path / "results"
    # Sampled gate proposals and sampled decoding over two eval seeds: every seeded stream is exercised.
    args = ["run", "--preset", "tiny", "--method", "speckd", "--seed", "5", "--quiet"]
    args += ["--set", "method.propose=sample", "--set", "eval.decoding=sample", "--set", "eval.seeds=[10,20]"]
    args += ["--set", "train.max_steps=4", "--max-eval-examples", "4"]
    args += ["--data-dir", str(data_dir), "--results-dir", str(results)]
    runs = []
    for name in ("first", "second"):  # separate caches: the init SFT and every score are recomputed
        monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache(name)))
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (res.output, res.exception)
        run_dir = Path(res.stdout.strip()).parent
        run = {f: [json.loads(line) for line in (run_dir / f).read_text().splitlines()] for f in FILES}
        runs.append(run | {"record": json.loads((run_dir / "record.json").read_text())})
    first, second = runs
    for run in runs:
        assert re.fullmatch(r"\d{8}-\d{6}-dolly-speckd-s5-[0-9a-f]{6}", run["record"]["run_id"])
    assert not first["record"]["init"]["reused"] and not second["record"]["init"]["reused"]
    assert stable(first["record"]) == stable(second["record"])
    assert stable(first["train_log.jsonl"]) == stable(second["train_log.jsonl"])
    assert first["samples.jsonl"] == second["samples.jsonl"]
    assert {s["eval_seed"] for s in first["samples.jsonl"]} == {10, 20}
    assert first["record"]["seeds"] == {"train": 5, "data_order": 5, "gate": 6, "policy": 7, "eval": [10, 20]}
