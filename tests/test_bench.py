"""`speckd-bench bench`: every variant measured in one process, one table with the machine."""

import math

from typer.testing import CliRunner

from speckd_bench.cli import app
from speckd_bench.errors import UserError

runner = CliRunner()


def test_kd_step_bench_times_every_variant_against_the_naive_baseline(tmp_path):
    out = tmp_path / "kd.md"
    args = ["bench", "kd-step", "--size", "small", "--device", "cpu", "--steps", "1", "--warmup", "0"]
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    table = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table)}
    for variant in ("naive full-logit fkl", "fkl, plain (target rows)", "fkl, fused", "speckd top-5, fused"):
        ms, ratio, peak, tok_s = rows[variant]
        assert float(ms) > 0 and math.isfinite(float(tok_s)) and peak == "n/a"  # peak memory is CUDA-only
    assert rows["naive full-logit fkl"][1] == "1.00"
    assert "machine: CPU" in out.read_text() and "vocabulary: 49152" in out.read_text()


def test_kd_step_bench_rejects_an_unknown_size():
    res = runner.invoke(app, ["bench", "kd-step", "--size", "huge"])
    assert isinstance(res.exception, UserError)
    assert str(res.exception) == "--size 'huge': use one of small, smollm2, qwen"


def test_default_run_bench_reports_the_teacher_cache_off_built_then_hit(data_dir):
    from speckd_bench.benchmarks import default_run

    overrides = {"preset": "tiny", "data.data_dir": str(data_dir), "train.max_steps": 2}
    rows, facts = default_run.main("dolly", "fkl", overrides)
    assert [r["cache"] for r in rows] == ["-", "built", "hit"]
    assert rows[0]["train_vs_off"] == 1.0 and all(r["train_s"] > 0 for r in rows)
    assert "| teacher cache off | - |" in default_run.format_table(rows, facts)
