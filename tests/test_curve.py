"""The learning curve (train.curve_every) and fidelity rows beyond the generated ones
(data.fidelity_examples), through whole tiny runs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.caches import cache_dir
from speckd_bench.cli.app import app
from speckd_bench.engine.curve import LearningCurve, read_curve

pytestmark = pytest.mark.slow

runner = CliRunner()
BASE = ["run", "--preset", "tiny", "--method", "speckd", "--seed", "3", "--quiet"]
BASE += ["--set", "train.max_steps=5", "--max-eval-examples", "4"]


def _run(tmp_path: Path, data_dir: Path, name: str, *extra: str) -> Path:
    args = [*BASE, *extra, "--data-dir", str(data_dir), "--results-dir", str(tmp_path / name)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Path(res.stdout.strip()).parent


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_curve_points_leave_training_unchanged(tmp_path, data_dir):
    plain = _run(tmp_path, data_dir, "plain")
    curved = _run(tmp_path, data_dir, "curved", "--set", "train.curve_every=2", "--set", "train.curve_rows=3")
    assert _losses(curved) == _losses(plain)  # scoring between steps changes no weight
    points = read_curve(curved / "curve.jsonl")
    assert [p["step"] for p in points] == [0, 2, 4, 5]  # before training, every 2 steps, the last
    assert all(0.0 <= p["tf_tvd"] <= 1.0 and 0.0 <= p["tf_top1"] <= 100.0 for p in points)
    assert points[0]["tf_fkl"] != points[-1]["tf_fkl"]  # the student moved
    record = json.loads((curved / "record.json").read_text())
    assert record["training"]["curve"] == points
    assert record["paths"]["curve"] == "curve.jsonl"
    plain_record = json.loads((plain / "record.json").read_text())
    after = record["metrics"]["dolly"]["after"]["metrics"]
    assert after == plain_record["metrics"]["dolly"]["after"]["metrics"]
    assert "curve" not in plain_record["training"] and not (plain / "curve.jsonl").exists()


def test_fidelity_rows_extend_teacher_forcing_only(tmp_path, data_dir):
    plain = _run(tmp_path, data_dir, "plain")
    wider = _run(tmp_path, data_dir, "wider", "--set", "data.fidelity_examples=8")
    rec, wide = (json.loads((d / "record.json").read_text()) for d in (plain, wider))
    assert wide["data"]["eval_sets"]["dolly"] == {**rec["data"]["eval_sets"]["dolly"], "n_fidelity": 8}
    assert rec["data"]["eval_sets"]["dolly"]["n_fidelity"] == 4
    samples = [json.loads(line) for line in (wider / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4  # still four answers
    m_plain, m_wide = (r["metrics"]["dolly"]["after"]["metrics"] for r in (rec, wide))
    assert m_wide["rougeL"] == m_plain["rougeL"]
    assert m_wide["tf_fkl"] != m_plain["tf_fkl"]  # pooled over eight rows' tokens, not four


def test_kept_teacher_logits_give_the_same_fidelity_metrics(tmp_path, data_dir):
    wide = ("--set", "data.fidelity_examples=8")
    plain = _run(tmp_path, data_dir, "plain", *wide)
    kept = [
        _run(tmp_path, data_dir, f"kept{i}", *wide, "--set", "eval.keep_teacher_logits=true") for i in (1, 2)
    ]
    assert len(list((cache_dir() / "teacher-logits").glob("*.safetensors"))) == 1  # stored once, then read
    metrics = [json.loads((d / "record.json").read_text())["metrics"]["dolly"] for d in (plain, *kept)]
    for m in metrics[1:]:
        assert m["after"]["metrics"] == metrics[0]["after"]["metrics"]
        assert m["before"] == metrics[0]["before"]  # the raw student and the init checkpoint too


class _Forced:
    def corpus(self):
        return {"tf_fkl": 1.0, "tf_rkl": 2.0, "tf_tvd": 0.5, "tf_top1": 40.0, "tf_fkl_prompt": 9.0}


def test_resumed_curve_drops_points_after_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr("speckd_bench.engine.curve.teacher_forced", lambda *a: _Forced())
    monkeypatch.setattr("speckd_bench.engine.curve.teacher_logits", lambda *a: [])
    path = tmp_path / "curve.jsonl"
    path.write_text("".join(json.dumps({"step": s, "tf_tvd": 0.1}) + "\n" for s in (0, 2, 4, 6)))
    curve = LearningCurve(path, None, None, [], 0, 10, every=2, last=7)
    curve.start(done_steps=4)  # the newest checkpoint is at step 4: the point of step 6 is redone
    assert [p["step"] for p in read_curve(path)] == [0, 2, 4]
    assert [curve.due(s) for s in (5, 6, 7)] == [False, True, True]
    curve.point(6)
    last = read_curve(path)[-1]
    assert last["step"] == 6 and last["tf_tvd"] == 0.5 and "tf_fkl_prompt" not in last
    fresh = LearningCurve(tmp_path / "new.jsonl", None, None, [], 0, 10, every=2, last=7)
    fresh.start(done_steps=0)
    assert [p["step"] for p in read_curve(tmp_path / "new.jsonl")] == [0]
