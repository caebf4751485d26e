"""`speckd-bench bench`: every variant measured in one process, one table with the machine."""

import math
import os

import pytest
import torch
from typer.testing import CliRunner

from speckd_bench.cli import app
from speckd_bench.errors import UserError

runner = CliRunner()


@pytest.mark.slow
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


@pytest.mark.slow
def test_default_run_bench_times_cold_then_warm_caches_then_the_teacher_cache(data_dir, monkeypatch):
    from speckd_bench.benchmarks import default_run

    monkeypatch.setenv("SPECKD_CACHE_DIR", "/nonexistent/must-not-be-used")
    overrides = {"preset": "tiny", "data.data_dir": str(data_dir), "train.max_steps": 2}
    rows, facts = default_run.main("dolly", "fkl", overrides, teacher_cache=True)
    assert [r["variant"] for r in rows] == [
        "cold caches",
        "warm caches",
        *(v for v, _ in default_run.TEACHER_CACHE_VARIANTS),
    ]
    assert [r["cache"] for r in rows] == ["-", "-", "built", "hit"]
    assert all(r["train_s"] > 0 for r in rows)
    assert facts["cpu capability"].startswith(torch.backends.cpu.get_cpu_capability())
    assert "| cold caches | - |" in default_run.format_table(rows, facts)
    assert os.environ["SPECKD_CACHE_DIR"] == "/nonexistent/must-not-be-used"  # restored
