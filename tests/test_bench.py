"""`speckd-bench bench`: every variant measured in one process, one table with the machine."""

import math
import os
import re

import pytest
import torch
from conftest import assert_one_line_error, cli
from typer.testing import CliRunner

from speckd_bench.cli.app import app
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
    floor_ms = float(rows["student SFT step (plain)"][0]) + float(rows["teacher forward"][0])
    gated = [name for name in rows if name.startswith("speckd top-5, fused")]
    sizes = [name for name in gated if name.endswith(" rows")]
    auto = int(re.search(r"fused chunk: (\d+) target rows", out.read_text()).group(1))
    assert sizes == [f"speckd top-5, fused, {auto // 4} rows", f"speckd top-5, fused, {2 * auto} rows"]
    assert "speckd top-5, fused, bf16 autocast" in gated  # a CPU shows bf16 autocast against float32
    for variant in ("naive full-logit fkl", "fkl, plain (target rows)", "fkl, fused", *gated):
        ms, ratio, floor, peak, tok_s = rows[variant]
        assert float(ms) > 0 and math.isfinite(float(tok_s)) and peak == "n/a"  # peak memory is CUDA-only
        assert float(floor) == pytest.approx(float(ms) / floor_ms, abs=0.01)
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


def test_default_run_bench_applies_set_overrides_to_every_run(monkeypatch):
    """--set reaches the runs (e.g. a float32 teacher, as on a CPU without native bfloat16)."""
    from speckd_bench.benchmarks import default_run

    seen = []

    def fake_main(task, method, overrides, teacher_cache):
        seen.append(overrides)
        return [], {}

    monkeypatch.setattr(default_run, "main", fake_main)
    monkeypatch.setattr(default_run, "format_table", lambda rows, facts: "table")
    args = ["bench", "default-run", "--set", "model.teacher_dtype=float32", "--max-train-examples", "64"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == [{"model.teacher_dtype": "float32", "data.max_train_examples": 64}]


def test_reference_parity_refuses_an_unknown_dtype(monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["bench", "reference-parity", "--dtype", "float16"])
    assert_one_line_error(code, err, "--dtype 'float16'", "float32-from-bfloat16")
