"""`export` never replaces a run or the results folder, and its files follow the umask."""

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app, main

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("results")
    args = ["run", "--preset", "tiny", "--method", "fkl", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(out), "--set", "train.max_steps=2", "--set", "eval.eval_before=false"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Path(res.stdout.strip()).parent


def _export(run_dir: Path, out: Path, monkeypatch, capsys) -> tuple[int, str]:
    args = ["export", run_dir.name, str(out), "--results-dir", str(run_dir.parent.parent), "--force"]
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("where", ["run", "results", "runs", "inside-run", "inside-results"])
def test_export_refuses_a_folder_holding_or_inside_runs(run_dir, where, monkeypatch, capsys):
    results = run_dir.parent.parent
    out = {
        "run": run_dir,
        "results": results,
        "runs": run_dir.parent,
        "inside-run": run_dir / "exported",
        "inside-results": results / "exported",
    }[where]
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    code, err = _export(run_dir, out, monkeypatch, capsys)
    assert code == 2 and "export must never replace" in err and err.count("\n") == 1
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before
    assert (run_dir / "record.json").is_file()


@pytest.mark.slow
def test_export_follows_the_umask(run_dir, tmp_path):
    out = tmp_path / "model"
    old = os.umask(0o027)
    try:
        res = runner.invoke(
            app, ["export", run_dir.name, str(out), "--results-dir", str(run_dir.parent.parent)]
        )
    finally:
        os.umask(old)
    assert res.exit_code == 0, (res.output, res.exception)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o640}


@pytest.mark.slow
def test_export_of_a_run_with_a_garbled_record_is_one_line(run_dir, tmp_path, monkeypatch, capsys):
    from conftest import assert_one_line_error

    copy = tmp_path / "results" / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "record.json").write_text('{"garbled')
    code, err = _export(copy, tmp_path / "model", monkeypatch, capsys)
    assert_one_line_error(code, err, "record.json cannot be used")
    assert not (tmp_path / "model").exists()
