"""The README's "Adding a method" example, copied out of the README as a user would, is a working plugin:
its own setting is validated (did-you-mean, range) and a tiny run trains with it."""

import json
import re
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli
from typer.testing import CliRunner

from speckd_bench.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    section = README.read_text().split("## Adding a method", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = tmp_path_factory.mktemp("plugins")
    (out / "shortkd.py").write_text(code)
    return out


def test_its_own_setting_is_checked_with_did_you_mean_and_its_range(plugin_dir, monkeypatch, capsys):
    listed = runner.invoke(app, ["methods", "shortkd", "--plugins", str(plugin_dir)])
    assert listed.exit_code == 0 and "max_target" in listed.stdout and "response tokens" in listed.stdout
    for setting, message in (("max_targt=4", "did you mean max_target?"), ("max_target=0", "expected >= 1")):
        args = ["run", "--preset", "tiny", "--method", "shortkd", "--plugins", plugin_dir]
        assert_one_line_error(*cli(monkeypatch, capsys, [*args, "--set", f"method.{setting}"]), message)


@pytest.mark.slow
def test_a_tiny_run_trains_on_the_first_response_tokens_only(plugin_dir, tmp_path, data_dir):
    args = ["run", "--preset", "tiny", "--method", "shortkd", "--plugins", str(plugin_dir), "--quiet"]
    args += ["--set", "method.max_target=3", "--set", "train.max_steps=2"]
    res = runner.invoke(app, [*args, "--data-dir", str(data_dir), "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    method = record["config"]["method"]
    assert (method["name"], method["max_target"], method["divergence"]) == ("shortkd", 3, "rkl")
    assert record["method_info"]["data_policy"] == "truncated"
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["target_tokens"] for r in rows] == [4 * 3, 4 * 3]  # 4 rows per batch, 3 targets each
