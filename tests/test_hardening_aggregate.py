"""Aggregation over training seeds with hostile records: NaN or infinite metrics, the same (config, seed)
run twice, a record field of the wrong type, a method name that matplotlib would read as mathtext."""

import json
import math
import re
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from synthetic_records import write_run
from test_hardening_report import edit_record, run_dir

from speckd_bench.cli.app import main

PROMPTS = [10.0, 20.0, 30.0, 40.0]
FLOORS = {"empty": ("", {"rougeL": 0.0}), "constant": ("yes", {"rougeL": 5.0})}


def results(tmp_path: Path, seeds=(1, 2, 3), **run) -> Path:
    """fkl runs of `seeds` (rougeL 25 + seed) with floors, and speckd runs of seeds 1..3 (26 + seed)."""
    out = tmp_path / "results"
    for method, shift, method_seeds in (("fkl", 0.0, seeds), ("speckd", 1.0, (1, 2, 3))):
        for seed in method_seeds:
            scores = {10: [p + shift + seed for p in PROMPTS]}
            write_run(out, method=method, seed=seed, scores=scores, losses=[2.0, 1.0], floors=FLOORS, **run)
    return out


def run_main(monkeypatch, capsys, *args) -> tuple[str, str]:
    """The command run through main(): its stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *map(str, args)])
    main()
    captured = capsys.readouterr()
    return captured.out, captured.err


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} in JSON output")


def table(monkeypatch, capsys, out: Path, *extra) -> tuple[list[dict], str]:
    """`table --format json` parsed strictly (NaN and Infinity raise), and its stderr."""
    text, err = run_main(monkeypatch, capsys, "table", "--results-dir", out, "--format", "json", *extra)
    return json.loads(text, parse_constant=_no_constant), err


def method_row(rows: list[dict], method: str) -> dict:
    return next(r for r in rows if r["kind"] == "method" and r["method"] == method)


def set_after(value: float):
    return lambda r: r["metrics"]["dolly"]["after"]["metrics"].update(rougeL=value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_left_out_of_the_aggregates_with_a_note(tmp_path, monkeypatch, capsys, value):
    out = results(tmp_path)
    bad = run_dir(out, "fkl", seed=3)
    edit_record(bad, set_after(value))
    rows, err = table(monkeypatch, capsys, out, "--baseline", "speckd")
    fkl = method_row(rows, "fkl")
    rouge = fkl["metrics"]["rougeL"]
    assert (rouge["mean"], rouge["n"], fkl["n_seeds"]) == (pytest.approx(26.5), 2, 3)
    assert rouge["per_run"].count(None) == 1 and rouge["std"] == pytest.approx(math.sqrt(0.5))
    assert fkl["delta"]["rougeL"]["n"] == 2 and fkl["prompt_bootstrap"]["rougeL"]["diff"] == pytest.approx(
        -1.5
    )
    assert f"run {bad.name}: dolly rougeL after training is {value}; left out of means" in err
    md, _ = run_main(monkeypatch, capsys, "table", "--results-dir", out, "--format", "md")
    verdict = next(line for line in md.splitlines() if "best method" in line)
    assert (
        "nan" not in verdict and "inf" not in verdict and "speckd (rougeL 28.00) beats every floor" in verdict
    )
    run_main(monkeypatch, capsys, "report", "--results-dir", out, "--baseline", "fkl")
    rows = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("|")]
    assert rows and not [line for line in rows if re.search(r"\b(nan|inf)\b", line)]


def test_a_non_finite_floor_is_left_out_of_the_verdict(tmp_path, monkeypatch, capsys):
    out = results(tmp_path)
    bad = run_dir(out, "fkl", seed=1)
    edit_record(
        bad,
        lambda r: r["metrics"]["dolly"]["reference"]["floors"]["empty"]["metrics"].update(rougeL=math.nan),
    )
    rows, err = table(monkeypatch, capsys, out)
    empty = next(r for r in rows if r["label"] == "floor: empty")
    assert empty["metrics"]["rougeL"] == {"mean": 0.0, "std": None, "n": 5}
    assert f"run {bad.name}: dolly rougeL floor: empty is nan" in err
    md, _ = run_main(monkeypatch, capsys, "table", "--results-dir", out, "--format", "md")
    assert not [line for line in md.splitlines() if "nan" in line and not line.startswith("- note: ")]


def test_no_verdict_when_every_method_value_is_non_finite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: PROMPTS}, losses=[1.0], floors=FLOORS)
    edit_record(run_dir(out, "fkl"), set_after(math.nan))
    md, _ = run_main(monkeypatch, capsys, "table", "--results-dir", out, "--format", "md")
    assert "best method" not in md


def test_json_output_is_strict_where_every_figure_is_nan(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: PROMPTS}, losses=[1.0], floors=FLOORS)
    degenerate = {"empty": math.nan, "distinct_1": math.inf, "distinct_2": 0.5, "repetition": 0.1}
    edit_record(run_dir(out, "fkl"), lambda r: r["metrics"]["dolly"]["after"].update(degeneracy=degenerate))
    rows, _ = table(monkeypatch, capsys, out)
    assert method_row(rows, "fkl")["degeneracy"] == {"distinct_2": 0.5, "repetition": 0.1}


def test_a_repeated_config_and_seed_counts_once_keeping_the_newest(tmp_path, monkeypatch, capsys):
    out = results(tmp_path, seeds=(1, 2))
    scores = {10: [p + 1 + 10 for p in PROMPTS]}  # seed 1 again, later, with other scores
    write_run(
        out, method="fkl", seed=1, scores=scores, losses=[2.0, 1.0], floors=FLOORS, created="2026-02-01"
    )
    rows, err = table(monkeypatch, capsys, out)
    fkl = method_row(rows, "fkl")
    assert (fkl["n_seeds"], fkl["seeds"]) == (2, [1, 2])
    assert fkl["mean"] == pytest.approx((36 + 27) / 2)
    first, rerun = "fkl-dolly-s1-0", "fkl-dolly-s1-5"
    assert (
        f"runs {first}, {rerun} ran the same config with seed 1: counted once, as the newest ({rerun})" in err
    )


def test_copies_of_one_record_are_one_seed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: PROMPTS}, losses=[1.0])
    source = run_dir(out, "fkl")
    for i in range(20):
        copy = out / "runs" / f"copy-{i:02d}"
        copy.mkdir()
        for path in source.iterdir():
            (copy / path.name).write_bytes(path.read_bytes())
        edit_record(copy, lambda r, name=copy.name: r.update(run_id=name))
    rows, err = table(monkeypatch, capsys, out)
    assert method_row(rows, "fkl")["n_seeds"] == 1
    assert "copy-00, copy-01" in err and "counted once, as the newest (fkl-dolly-s1-0)" in err


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("seed", "one", 'field seed is "one", expected int'),
        ("method", 3, "field method is 3, expected str"),
        ("num_processes", True, "field num_processes is true, expected int"),
        ("created", "yesterday", 'field created is "yesterday", not an ISO date'),
    ],
)
def test_a_field_of_the_wrong_type_skips_that_record_only(
    tmp_path, monkeypatch, capsys, field, value, reason
):
    out = results(tmp_path)
    bad = run_dir(out, "speckd")
    edit_record(bad, lambda r: r.update({field: value}))
    rows, err = table(monkeypatch, capsys, out)
    assert {r["method"]: r["n_seeds"] for r in rows if r["kind"] == "method"} == {"fkl": 3, "speckd": 2}
    assert f"skipped {bad / 'record.json'}: {reason}" in err
    run_main(monkeypatch, capsys, "plot", "--results-dir", out, "--out", tmp_path / "plots")
    run_main(monkeypatch, capsys, "report", "--results-dir", out, "--baseline", "fkl")


@pytest.mark.parametrize("name", ["a$x^2$b", "a$x^$b"])
def test_a_method_name_with_dollars_is_drawn_as_written(tmp_path, monkeypatch, capsys, name):
    """Every text matplotlib draws has its `$` escaped, so no name is read (or fails to parse) as math."""
    out = results(tmp_path)
    for seed in (1, 2, 3):
        edit_record(run_dir(out, "speckd", seed), lambda r: r.update(method=name))
    drawn: list[str] = []
    savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn.extend(t.get_text() for t in fig.findobj(Text))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    plots, _ = run_main(monkeypatch, capsys, "plot", "--results-dir", out, "--out", tmp_path / "plots")
    assert plots.count(".png") >= 2
    named = [t for t in drawn if "a" in t and "b" in t and "x^" in t]
    assert named and all(t.count("\\$") == 2 == t.count("$") for t in named), named
    run_main(monkeypatch, capsys, "report", "--results-dir", out, "--baseline", "fkl")
    assert name.replace("$", "") in (out / "README.md").read_text().replace("\\", "").replace("$", "")
    page = tmp_path / "page.html"
    run_main(monkeypatch, capsys, "report", "--results-dir", out, "--baseline", "fkl", "--html", page)
    assert name in page.read_text()
