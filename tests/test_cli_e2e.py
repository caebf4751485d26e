"""End to end through the CLI on the tiny preset: run three methods x two seeds, then the table."""

import json
import sys

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app, main
from speckd_bench.config.run_config import flatten
from speckd_bench.records.run_record import SCHEMA_VERSION, RunRecord

pytestmark = pytest.mark.slow

runner = CliRunner()
METHODS = ("sft", "fkl", "speckd")


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("results")
    for method in METHODS:
        args = [
            "run",
            "--preset",
            "tiny",
            "--method",
            method,
            "--seed",
            "1",
            "--seed",
            "2",
            "--data-dir",
            str(data_dir),
            "--results-dir",
            str(out),
            "--max-train-examples",
            "16",
            "--quiet",
        ]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (res.output, res.exception)
    return out


def test_by_default_no_run_uses_the_teacher_cache(results):
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/record.json"))]
    assert all(r["teacher_cache"] == {"used": False} for r in records)


def test_every_run_writes_a_complete_record(results):
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/record.json"))]
    assert len(records) == 6
    for rec in records:
        assert RunRecord.from_json(rec).complete and rec["schema_version"] == SCHEMA_VERSION == 2
        assert not any(str(v).startswith("/") for v in flatten(rec["data"]).values())  # paths are relative
        assert rec["config"]["data"]["max_train_examples"] == 16
        assert rec["data"]["n_train"] == 16
        for key in ("torch", "transformers", "speckd_bench"):
            assert rec["versions"][key]
        for key in ("train_tokens_per_s", "eval_tokens_per_s", "wall_s"):
            assert rec["timings"][key] > 0
        before = rec["metrics"]["dolly"]["before"]
        assert {"raw", "init"} <= set(before)
        assert "rougeL" in rec["metrics"]["dolly"]["after"]["metrics"]
        for key in ("final_loss", "loss_std_last_quarter", "loss_spikes", "grad_norm_mean", "grad_norm_max"):
            assert rec["training"][key] is not None
        run_dir = results / "runs" / rec["run_id"]
        assert (run_dir / rec["paths"]["samples"]).is_file()
        log = [json.loads(line) for line in (run_dir / rec["paths"]["train_log"]).read_text().splitlines()]
        assert len(log) == rec["training"]["steps"] >= 1
        assert {"step", "loss", "divergence", "tar", "grad_norm", "lr", "tokens_per_s"} <= set(log[0])
        if rec["method"] == "speckd":
            assert all(0.0 <= row["tar"] <= 1.0 for row in log)
            assert rec["training"]["tar_mean"] is not None
        else:
            assert all(row["tar"] is None for row in log)


def test_init_checkpoint_is_shared_by_all_methods_of_a_seed(results):
    records = [json.loads(p.read_text()) for p in (results / "runs").glob("*/record.json")]
    for seed in (1, 2):
        inits = {r["init"]["key"] for r in records if r["seed"] == seed}
        assert len(inits) == 1
        reused = sorted(r["init"]["reused"] for r in records if r["seed"] == seed)
        assert reused[1:] == [True, True]  # built by the seed's first run (or an earlier test), then reused


def test_table_json_groups_seeds(results):
    res = runner.invoke(app, ["table", "--results-dir", str(results), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = [r for r in json.loads(res.stdout) if r["kind"] == "method"]
    assert sorted(r["method"] for r in rows) == sorted(METHODS)
    for row in rows:
        assert row["n_seeds"] == 2 and row["seeds"] == [1, 2]
        assert row["mean"] is not None and row["std"] is not None
    md = runner.invoke(app, ["table", "--results-dir", str(results), "--format", "md"]).stdout
    method_lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| *")]
    assert len(method_lines) == 1 + len(METHODS)  # the header, then one row per method


def test_table_skips_broken_records(results, tmp_path):
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "record.json").write_text("{truncated")
    res = runner.invoke(app, ["table", "--results-dir", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout) == []
    assert "skipped" in res.stderr and "broken" in res.stderr


def test_listing_commands():
    assert "dolly" in runner.invoke(app, ["tasks"]).stdout
    listing = runner.invoke(app, ["methods"]).stdout
    assert all(m in listing for m in METHODS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--method", "spekd", "--preset", "tiny"], "unknown method 'spekd' (did you mean speckd"),
        (["run", "--task", "dolyl", "--preset", "tiny"], "unknown task 'dolyl' (did you mean dolly?)"),
        (["run", "--preset", "tiny", "--set", "method.k=0"], "method.k=0 is out of range"),
        (["table", "--format", "xml"], "--format 'xml' is not one of"),
    ],
)
def test_user_errors_are_one_line_exit_2(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
