"""Results are never lost or mixed up: simultaneous runs into one results directory all end with intact,
distinct records, and `table` lists every unusable record as skipped, with the reason, without crashing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.records.store import load_records

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

runner = CliRunner()
N_RUNS = 3


@pytest.fixture(scope="module")
def simultaneous(tmp_path_factory, data_dir, fresh_cache) -> tuple[Path, Path, list[Path]]:
    """N_RUNS processes of one config and seed started at once into one results dir, with one cold cache
    (so they also race to build the shared init checkpoint)."""
    cache, results = fresh_cache("cache"), tmp_path_factory.mktemp("results")
    args = [sys.executable, "-m", "speckd_bench", "run", "--preset", "tiny", "--method", "fkl", "--seed", "1"]
    args += ["--set", "train.max_steps=2", "--set", "eval.eval_before=false", "--max-eval-examples", "2"]
    args += ["--data-dir", str(data_dir), "--results-dir", str(results), "--quiet"]
    env = {**os.environ, "SPECKD_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(N_RUNS)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return results, cache, [Path(out.strip()) for out, _ in outputs]


def test_simultaneous_runs_end_with_intact_distinct_records(simultaneous):
    results, cache, paths = simultaneous
    assert len(set(paths)) == N_RUNS
    loaded = load_records(results)
    assert loaded.skipped == []
    assert sorted(r.run_id for r in loaded.records) == sorted(p.parent.name for p in paths)
    assert len({json.dumps(r.metrics["dolly"]["after"]["metrics"]) for r in loaded.records}) == 1
    assert len({r.training["final_loss"] for r in loaded.records}) == 1
    for path in paths:
        assert sorted(p.name for p in path.parent.iterdir()) == [
            "checkpoint",
            "config.json",
            "record.json",
            "samples.jsonl",
            "state.json",
            "train_log.jsonl",
        ]
    # One init checkpoint came out of the race, and no temporary folder was left behind.
    assert [p.name for p in (cache / "init").iterdir()] == [loaded.records[0].init["key"]]


def test_table_skips_unusable_records_with_the_reason(simultaneous, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(simultaneous[0], results)
    good = json.loads(simultaneous[2][0].read_text())
    text = json.dumps(good)
    interrupted = {**good, "status": "interrupted", "metrics": {"dolly": {"before": {}}}}
    broken = {
        "truncated": text[: len(text) // 2],
        "empty": "",
        "a-list": "[1, 2]",
        "no-fields": json.dumps({"run_id": "x", "status": "complete"}),
        "old-schema": json.dumps({**good, "schema_version": 0}),
        "unknown-status": json.dumps({**good, "status": "running"}),
        "interrupted": json.dumps(interrupted),
    }
    for name, content in broken.items():
        (results / "runs" / name).mkdir()
        (results / "runs" / name / "record.json").write_text(content)
    (results / "runs" / "killed").mkdir()
    shutil.copy(simultaneous[2][0].parent / "config.json", results / "runs" / "killed")

    for fmt in ("rich", "md", "csv", "json"):
        res = runner.invoke(app, ["table", "--results-dir", str(results), "--format", fmt])
        assert res.exit_code == 0, (res.output, res.exception)
        assert res.stderr.count("skipped") == len(broken) + 1
    (row,) = [r for r in json.loads(res.stdout) if r["kind"] == "method"]
    assert row["n_seeds"] == 1  # the simultaneous runs share config and seed: counted once, with a note
    assert "counted once" in res.stderr

    reasons = {
        Path(path).relative_to(results / "runs").parts[0]: why for path, why in load_records(results).skipped
    }
    assert reasons.keys() == {*broken, "killed"}
    assert reasons["truncated"].startswith("unreadable") and reasons["empty"].startswith("unreadable")
    assert reasons["a-list"] == "not a JSON object"
    assert reasons["no-fields"] == "missing fields schema_version"
    assert reasons["old-schema"].startswith("schema version 0")
    assert reasons["unknown-status"] == "status running"
    assert reasons["interrupted"] == "status interrupted (shown with --include-interrupted)"
    assert reasons["killed"].startswith("no record.json") and "--resume killed" in reasons["killed"]

    shown = runner.invoke(
        app, ["table", "--results-dir", str(results), "--format", "json", "--include-interrupted"]
    )
    rows = {json.dumps(r["settings"]): r for r in json.loads(shown.stdout) if r["kind"] == "method"}
    assert rows.keys() == {"{}", '{"status": "interrupted"}'}
    assert rows['{"status": "interrupted"}']["mean"] is None
