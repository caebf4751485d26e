"""Trackers through accelerate, offline: what TensorBoard and MLflow read back equals train_log.jsonl."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app, main
from speckd_bench.engine.tracking import parse_report_to

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("results")
    args = ["run", "--preset", "tiny", "--method", "speckd", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(out), "--set", "train.max_steps=4", "--report-to", "tensorboard,mlflow"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Path(res.stdout.strip()).parent


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per train/<key>: (step, value) of every numeric field of the training log."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in _log(run_dir):
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float):
                series.setdefault(f"train/{key}", []).append((row["step"], value))
    return series


@pytest.mark.slow
def test_tensorboard_events_equal_the_training_log(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "trackers" / "tensorboard"))
    events.Reload()
    expected = _expected(run_dir)
    assert {"train/loss", "train/divergence", "train/tar", "train/grad_norm", "train/lr"} <= set(expected)
    for tag, values in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in values], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in values], rel=1e-6), tag  # float32
    record = json.loads((run_dir / "record.json").read_text())
    final = events.Scalars("eval/dolly/rougeL")[-1]
    assert final.step == 4
    assert final.value == pytest.approx(record["metrics"]["dolly"]["after"]["metrics"]["rougeL"], abs=1e-6)


@pytest.mark.slow
def test_mlflow_file_store_holds_config_log_and_metrics(run_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run_dir / "trackers" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("speckd-bench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name
    assert run.data.params["run_id"] == run_dir.name
    assert run.data.params["method.name"] == "speckd" and run.data.params["train.max_steps"] == "4"
    for key, values in _expected(run_dir).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(s, pytest.approx(v, rel=1e-9)) for s, v in values], key
    record = json.loads((run_dir / "record.json").read_text())
    init = record["metrics"]["dolly"]["before"]["init"]["metrics"]["rougeL"]
    assert run.data.metrics["init/dolly/rougeL"] == pytest.approx(init)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_docs_read_back_snippet_runs_in_a_fresh_process(run_dir):
    import ast
    import os
    import re
    import subprocess

    doc = (Path(__file__).parents[1] / "docs" / "tools.md").read_text()
    section = doc.split("Read back offline", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    code = code.replace("results/runs/RUN_ID", str(run_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    tensorboard, mlflow = (ast.literal_eval(line) for line in out.stdout.strip().splitlines())
    expected = _expected(run_dir)["train/loss"]
    assert [s for s, _ in tensorboard] == [s for s, _ in expected] == [s for s, _ in sorted(mlflow)]


def test_report_to_none_or_empty_means_no_tracker():
    assert parse_report_to(None) == parse_report_to("none") == parse_report_to("") == []
    assert parse_report_to("tensorboard, mlflow,tensorboard") == ["tensorboard", "mlflow"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tensorbord", "--report-to 'tensorbord' is not a tracker accelerate knows"),
        ("wandb", "pip install 'speckd-bench[wandb]'"),
    ],
)
def test_bad_or_missing_tracker_is_one_line_exit_2(monkeypatch, capsys, value, message):
    import accelerate.tracking

    available = [t for t in accelerate.tracking.get_available_trackers() if str(t) != "wandb"]
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: available)
    monkeypatch.setattr(sys, "argv", ["speckd-bench", "run", "--preset", "tiny", "--report-to", value])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_lm_eval_scores_reach_the_trackers_without_standard_errors(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from speckd_bench.engine.tracking import Tracking

    lm_eval = {
        "results": {
            "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1, "alias": "x"},
            "tiny_mc": {"acc,none": 0.5, "acc_stderr,none": "N/A"},
        }
    }
    tracking = Tracking(["tensorboard"])
    tracking.start("run-1", {"seed": 1}, tmp_path)
    tracking.log_lm_eval(lm_eval, step=4)
    tracking.log_lm_eval({"error": "RuntimeError: out of memory"}, step=4)  # a failure logs nothing
    tracking.finish()
    events = EventAccumulator(str(tmp_path / "trackers" / "tensorboard"))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    assert set(scalars) == {"lm_eval/gsm8k/exact_match/strict-match", "lm_eval/tiny_mc/acc"}
    assert [(e.step, e.value) for e in scalars["lm_eval/tiny_mc/acc"]] == [(4, 0.5)]
    assert scalars["lm_eval/gsm8k/exact_match/strict-match"][0].value == pytest.approx(0.25)
