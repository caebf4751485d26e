"""A run's final checkpoint carries its checksums: export and eval --run refuse a damaged one in one line
(an older one, without checksums, loads with a warning); resume refuses an edited config.json in one line."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli

from speckd_bench.config.run_config import config_from_dict
from speckd_bench.engine.run_state import STARTED_WITH, STATE_FILE, RunState
from speckd_bench.methods.discovery import method_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir) -> Path:
    """A finished tiny run (its folder under results/runs)."""
    from typer.testing import CliRunner

    from speckd_bench.cli.app import app

    out = tmp_path_factory.mktemp("results")
    args = ["run", "--preset", "tiny", "--method", "fkl", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(out), "--set", "train.max_steps=2", "--set", "eval.eval_before=false"]
    args += ["--max-eval-examples", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Path(res.stdout.strip()).parent


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy of the finished run in its own results folder, free to damage."""
    target = tmp_path / "results" / "runs" / finished.name
    shutil.copytree(finished, target)
    return target


def overwrite(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        fh.write(os.urandom(64))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_the_final_checkpoint_is_written_with_its_checksums(finished):
    sums = json.loads((finished / "checkpoint" / "checksums.json").read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= sums.keys()


@pytest.mark.parametrize("damage", [overwrite, truncate])
def test_export_and_eval_refuse_a_damaged_final_checkpoint(run_copy, tmp_path, monkeypatch, capsys, damage):
    damage(run_copy / "checkpoint" / "model.safetensors")
    results, out = run_copy.parent.parent, tmp_path / "export" / "model"
    code, err = cli(monkeypatch, capsys, ["export", run_copy.name, out, "--results-dir", results])
    assert_one_line_error(code, err, "final checkpoint", "damaged", "model.safetensors", "run it again")
    assert not (tmp_path / "export").exists()  # nothing written, not even a temporary folder
    code, err = cli(monkeypatch, capsys, ["eval", "--run", run_copy.name, "--results-dir", results])
    assert_one_line_error(code, err, "final checkpoint", "damaged", "model.safetensors")
    assert not (run_copy / "evals").exists()


def test_a_checkpoint_without_checksums_loads_with_a_warning(run_copy, tmp_path):
    from typer.testing import CliRunner

    from speckd_bench.cli.app import app

    (run_copy / "checkpoint" / "checksums.json").unlink()
    out = tmp_path / "export"
    args = ["export", run_copy.name, str(out), "--results-dir", str(run_copy.parent.parent)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.stderr.count("\n") == 1 and "cannot be verified" in res.stderr
    assert (out / "model.safetensors").is_file()


def unfinished(run_copy: Path) -> Path:
    """An unfinished run folder (config and state only) made from the finished run's config."""
    stored = json.loads((run_copy / "config.json").read_text())
    run_dir = run_copy.parent / "u1"
    RunState.create(run_dir, config_from_dict(stored, method_config, "config.json"))
    return run_dir


def edit_config(run_dir: Path, edit) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c["train"].update(lr=0.5), "train.lr 0.001 -> 0.5"),
        (lambda c: c["train"].pop("lr"), "train.lr 0.001 -> None"),
        (lambda c: c.pop("method"), "method.name"),
        (lambda c: c.update(seed=7), "seed 1 -> 7"),
    ],
)
def test_resume_refuses_an_edited_config_in_one_line(run_copy, monkeypatch, capsys, edit, says):
    run_dir = unfinished(run_copy)
    edit_config(run_dir, edit)
    code, err = cli(monkeypatch, capsys, ["run", "--resume", "u1", "--results-dir", run_dir.parent.parent])
    assert_one_line_error(code, err, "config.json was edited", says, "put those values back")


def test_resume_of_an_older_folder_names_the_keys_its_config_lacks(run_copy, monkeypatch, capsys):
    run_dir = unfinished(run_copy)
    state = json.loads((run_dir / STATE_FILE).read_text())
    del state[STARTED_WITH]  # a folder from before the config was kept in state.json
    (run_dir / STATE_FILE).write_text(json.dumps(state))
    edit_config(run_dir, lambda c: c["train"].pop("lr"))
    code, err = cli(monkeypatch, capsys, ["run", "--resume", "u1", "--results-dir", run_dir.parent.parent])
    assert_one_line_error(code, err, "config.json lacks train.lr", "start a new run")
