"""eval.main_metric is what a run records and leads its summary with; the record's main_metric decides the
leaderboard's judged column when no --metric is given."""

import json
from pathlib import Path

import pytest
from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.selection import select_sections


def _board(tmp_path, main: str, fidelity: bool) -> None:
    for method, shift in (("fkl", 0.0), ("rkl", -0.01)):
        for seed in (1, 2):
            tvd = {"tf_tvd": [0.3 + shift + 0.01 * seed] * 4} if fidelity else {}
            record = write_run(
                tmp_path, method=method, seed=seed, scores={10: [10.0 + seed] * 4}, losses=[1.0], fidelity=tvd
            )
            path = tmp_path / "runs" / record["run_id"] / "record.json"
            path.write_text(json.dumps({**record, "main_metric": main}))


def test_the_records_main_metric_is_the_judged_column_without_metric(tmp_path):
    _board(tmp_path, "tf_tvd", fidelity=True)
    (section,) = select_sections(tmp_path, baseline="fkl")
    assert section.metrics[0] == "tf_tvd"
    assert [g.method for g in section.groups][0] == "rkl"  # lower tf_tvd is better: rkl first
    assert section.groups[0].row.delta["tf_tvd"].diff < 0


def test_a_main_metric_missing_from_the_records_falls_back_to_their_first_metric(tmp_path):
    _board(tmp_path, "tf_tvd", fidelity=False)
    (section,) = select_sections(tmp_path, baseline="fkl")
    assert section.metrics[0] == "rougeL"


def test_an_explicit_metric_wins_over_the_records_main_metric(tmp_path):
    _board(tmp_path, "tf_tvd", fidelity=True)
    (section,) = select_sections(tmp_path, baseline="fkl", metrics=["rougeL", "tf_tvd"])
    assert section.metrics == ["rougeL", "tf_tvd"]


@pytest.mark.slow
def test_a_run_records_and_leads_its_summary_with_eval_main_metric(tmp_path, data_dir):
    args = ["run", "--preset", "tiny", "--method", "fkl", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(tmp_path), "--set", "train.max_steps=2", "--set", "eval.main_metric=tf_tvd"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    record = json.loads(Path(res.stdout.strip()).read_text())
    assert record["main_metric"] == "tf_tvd"
    lines = res.stderr.strip().splitlines()
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("dolly tf_tvd: raw ")) :]
    assert summary[0].endswith("(lower is better)")
    assert summary[1].startswith("dolly rougeL: raw ") and summary[-1].endswith(res.stdout.strip())
