"""A task plugin written in a temp dir is discovered, validated, trained on and evaluated end to end; a
recorded run's checkpoint is evaluated again without training."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import speckd_bench.data.tasks as tasks_module
from speckd_bench.api.metrics import FIDELITY_METRICS, PER_PROMPT_FIDELITY
from speckd_bench.cli.app import app
from speckd_bench.data.tasks import TASKS, discover_tasks

runner = CliRunner()

TASK_YAML = """\
name: countup
kind: math
description: name the number that follows (a plugin written by a test)
splits:
  train: {mirror: countup/train.jsonl}
  eval: {mirror: countup/eval.jsonl}
prompt:
  template: "What number follows {n}?\\nAnswer: "
reference: answer
hook: countup_hook.py
metrics: [accuracy, digits_only]
defaults:
  eval.max_new_tokens: 6
"""
HOOK = '''\
"""Hook of the countup plugin: extract the last number; a custom metric."""

from speckd_bench.api.metrics import last_number, register_metric


def extract_prediction(output: str) -> str:
    return last_number(output)


register_metric("digits_only", "answer is all digits", per_example=lambda p, refs: 100.0 * p.isdigit())
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> tuple[Path, Path]:
    """(plugin dir, mirror dir) of the countup task."""
    plugin_dir = tmp_path_factory.mktemp("plugins")
    (plugin_dir / "countup.yaml").write_text(TASK_YAML)
    (plugin_dir / "countup_hook.py").write_text(HOOK)
    mirror = tmp_path_factory.mktemp("mirror")
    (mirror / "countup").mkdir()
    for split, start, n in (("train", 0, 16), ("eval", 100, 5)):
        rows = [{"n": str(i), "answer": str(i + 1)} for i in range(start, start + n)]
        (mirror / "countup" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return plugin_dir, mirror


@pytest.fixture(scope="module")
def trained(plugin, tmp_path_factory) -> dict:
    plugin_dir, mirror = plugin
    results = tmp_path_factory.mktemp("results")
    args = [
        "run", "--plugins", str(plugin_dir), "--task", "countup", "--method", "fkl", "--preset", "tiny",
        "--data-dir", str(mirror), "--results-dir", str(results), "--quiet",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(Path(res.stdout.strip()).read_text()) | {"_results": results}


def test_plugin_is_listed_and_validated(plugin):
    plugin_dir, mirror = plugin
    listing = runner.invoke(app, ["tasks", "--plugins", str(plugin_dir)]).stdout
    assert "countup" in listing
    res = runner.invoke(
        app, ["tasks", "validate", str(plugin_dir / "countup.yaml"), "--data-dir", str(mirror)]
    )
    assert res.exit_code == 0, res.output
    assert "ok: task countup (math; metrics accuracy, digits_only, hook" in res.stdout
    assert "train: 16 rows" in res.stdout and "eval: 5 rows" in res.stdout


@pytest.mark.slow
def test_plugin_trains_and_scores_with_its_hook_and_metric(trained):
    assert trained["task"] == "countup" and trained["main_metric"] == "accuracy"
    assert trained["data"]["n_train"] == 16 and trained["data"]["n_eval"] == 5
    after = trained["metrics"]["countup"]["after"]["metrics"]
    per_prompt = {m.name for m in PER_PROMPT_FIDELITY}
    assert set(after) == {"accuracy", "digits_only", *FIDELITY_METRICS, *per_prompt}
    assert trained["config"]["eval"]["max_new_tokens"] == 8  # the tiny preset sits above task defaults
    run_dir = trained["_results"] / "runs" / trained["run_id"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and all(s["eval_set"] == "countup" for s in samples)
    for s in samples:  # the hook's extraction is what the metrics saw
        assert s["answer"] == tasks_module.TASKS.get("countup").answer(s["output"])
        assert s["scores"]["digits_only"] == 100.0 * s["answer"].isdigit()


@pytest.mark.slow
def test_eval_reproduces_a_runs_scores_from_its_checkpoint(plugin, trained):
    plugin_dir, mirror = plugin
    results = trained["_results"]
    args = [
        "eval", "--run", trained["run_id"], "--results-dir", str(results), "--plugins", str(plugin_dir),
        "--data-dir", str(mirror), "--quiet",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    path = Path(res.stdout.strip())
    assert path.parent.parent == results / "runs" / trained["run_id"] / "evals"
    record = json.loads(path.read_text())
    assert record["kind"] == "eval" and record["run_id"] == trained["run_id"]
    assert record["metrics"]["countup"]["metrics"] == trained["metrics"]["countup"]["after"]["metrics"]
    assert (path.parent / "samples.jsonl").is_file()
    # Run records are untouched, so the leaderboard still sees exactly one run.
    table = runner.invoke(app, ["table", "--results-dir", str(results), "--format", "json"])
    assert [r["kind"] for r in json.loads(table.stdout)].count("method") == 1


@pytest.mark.slow
def test_eval_scores_any_model_without_a_run(synthetic_data, tmp_path):
    args = [
        "eval", "--model", "tiny-random", "--task", "dolly", "--preset", "tiny", "--quiet",
        "--data-dir", str(synthetic_data), "--results-dir", str(tmp_path), "--max-eval-examples", "4",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    path = Path(res.stdout.strip())
    assert path.parent.parent == tmp_path / "evals"
    record = json.loads(path.read_text())
    assert record["run_id"] is None and record["model"]["name"] == "tiny-random"
    assert (
        record["data"]["eval_sets"]["dolly"]["n_eval"] == 4
        and "rougeL" in record["metrics"]["dolly"]["metrics"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--task", "dolly"], "exactly one of --run RUN_ID and --model NAME"),
        (["eval", "--run", "nope"], "no run 'nope'"),
    ],
)
def test_eval_input_errors(args, message, tmp_path):
    res = runner.invoke(app, [*args, "--results-dir", str(tmp_path)])
    assert message in str(res.exception)


def test_plugins_come_from_speckd_plugins_and_entry_points(plugin, monkeypatch, tmp_path):
    plugin_dir, _ = plugin
    TASKS._entries.pop("countup", None)
    monkeypatch.setenv("SPECKD_PLUGINS", str(plugin_dir))
    assert "countup" in discover_tasks()

    monkeypatch.delenv("SPECKD_PLUGINS")
    other = tmp_path / "ep"
    other.mkdir()
    (other / "echo.yaml").write_text(
        TASK_YAML.replace("name: countup", "name: echo").replace("hook: countup_hook.py\n", "")
        .replace("metrics: [accuracy, digits_only]", "metrics: [exact_match]")
    )  # fmt: skip

    class EntryPoint:
        name = "echo-tasks"

        def load(self):
            return str(other)

    monkeypatch.setattr(tasks_module, "entry_points", lambda group: [EntryPoint()])
    assert "echo" in discover_tasks()


def test_a_missing_plugin_directory_is_named(tmp_path):
    res = runner.invoke(app, ["tasks", "--plugins", str(tmp_path / "absent")])
    assert "plugin directory" in str(res.exception) and "absent" in str(res.exception)
