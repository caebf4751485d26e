"""`table`, `report` and `plot` over a results folder with one bad file: the rest is still tabulated, the
bad part is named; a folder that is missing or read-only is one line, exit 2."""

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli
from synthetic_records import write_run

from speckd_bench.cli.app import main

PROMPTS = [10.0, 20.0, 30.0, 40.0]


def results(tmp_path: Path, n: int = 3) -> Path:
    """Runs of fkl and speckd, seeds 1..n, each with its log and samples."""
    out = tmp_path / "results"
    for seed in range(1, n + 1):
        for method, shift in (("fkl", 0.0), ("speckd", 1.0)):
            scores = {10: [p + shift + seed for p in PROMPTS]}
            write_run(out, method=method, seed=seed, scores=scores, losses=[2.0, 1.5, 1.0])
    return out


def run_dir(out: Path, method: str, seed: int = 1) -> Path:
    return next(p for p in (out / "runs").iterdir() if p.name.startswith(f"{method}-dolly-s{seed}-"))


def edit_record(path: Path, change) -> None:
    record = json.loads((path / "record.json").read_text())
    change(record)
    (path / "record.json").write_text(json.dumps(record))


def table(monkeypatch, capsys, out: Path, *extra) -> tuple[list[dict], str]:
    """`table --format json` run through main(): its rows and its stderr."""
    args = ["table", "--results-dir", out, "--format", "json", *extra]
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *map(str, args)])
    main()
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def methods_of(rows: list[dict]) -> dict[str, int]:
    return {r["method"]: r["n_seeds"] for r in rows if r["kind"] == "method"}


@pytest.mark.parametrize(
    "garble",
    [b"{garbled\n", b"\xff\xfe not utf-8\n", b"[" * 50_000 + b"\n", b"[1, 2]\n"],
    ids=["garbled", "not utf-8", "deep", "not an object"],
)
@pytest.mark.parametrize("name", ["train_log.jsonl", "samples.jsonl"])
def test_a_garbled_line_of_a_run_file_is_left_out_with_a_note(tmp_path, monkeypatch, capsys, name, garble):
    out = results(tmp_path)
    path = run_dir(out, "speckd") / name
    path.write_bytes(path.read_bytes() + garble)
    rows, err = table(monkeypatch, capsys, out, "--baseline", "fkl")
    assert methods_of(rows) == {"fkl": 3, "speckd": 3}
    assert f"{path}: 1 line(s) not a JSON object (first: line " in err


def test_a_metric_that_is_not_a_number_skips_that_run_with_the_reason(tmp_path, monkeypatch, capsys):
    out = results(tmp_path)
    bad = run_dir(out, "speckd")
    edit_record(bad, lambda r: r["metrics"]["dolly"]["after"]["metrics"].update(rougeL="abc"))
    rows, err = table(monkeypatch, capsys, out, "--baseline", "fkl")
    assert methods_of(rows) == {"fkl": 3, "speckd": 2}
    assert f'skipped {bad / "record.json"}: metrics.dolly.after.metrics.rougeL is "abc", not a number' in err


@pytest.mark.parametrize(
    "metrics, reason",
    [
        ([], "field metrics is list, expected dict"),
        ({}, "its metrics hold no eval set"),
        ({"dolly": "abc"}, 'metrics.dolly is "abc", expected an object'),
        ({"dolly": {"after": []}}, "metrics.dolly.after is [], expected an object"),
        ({"dolly": {"reference": {"floors": {"empty": 3}}}}, "holds a floor that is not an object"),
    ],
    ids=["list", "empty", "string", "after list", "floor"],
)
def test_a_record_without_usable_metrics_is_skipped_with_the_reason(
    tmp_path, monkeypatch, capsys, metrics, reason
):
    out = results(tmp_path)
    bad = run_dir(out, "speckd")
    edit_record(bad, lambda r: r.update(metrics=metrics))
    rows, err = table(monkeypatch, capsys, out)
    assert methods_of(rows) == {"fkl": 3, "speckd": 2}
    assert f"skipped {bad / 'record.json'}: " in err and reason in err


def test_a_record_that_is_not_utf8_is_skipped(tmp_path, monkeypatch, capsys):
    out = results(tmp_path)
    (run_dir(out, "speckd") / "record.json").write_bytes(b"\xff\xfe{}")
    rows, err = table(monkeypatch, capsys, out)
    assert methods_of(rows) == {"fkl": 3, "speckd": 2}
    assert "UnicodeDecodeError" in err


def test_table_on_a_missing_folder_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["table", "--results-dir", tmp_path / "nope"])
    assert_one_line_error(code, err, f"results folder {tmp_path / 'nope'} does not exist", "--results-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_into_a_read_only_folder_are_one_line(tmp_path, monkeypatch, capsys, command):
    out = results(tmp_path, n=2)
    out.chmod(0o555)
    try:
        code, err = cli(monkeypatch, capsys, [command, "--results-dir", out])
    finally:
        out.chmod(0o755)
    assert_one_line_error(code, err, "cannot write", "Permission denied", "--out")


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_where_a_file_blocks_the_output_are_one_line(tmp_path, monkeypatch, capsys, command):
    """What a read-only folder does for a user who is not root: the output cannot be created."""
    out = results(tmp_path, n=2)
    (tmp_path / "blocker").write_text("")
    target = tmp_path / "blocker" / ("README.md" if command == "report" else "plots")
    code, err = cli(monkeypatch, capsys, [command, "--results-dir", out, "--out", target])
    assert_one_line_error(code, err, "cannot write", "--out")
