"""Column groups of the leaderboard tables: a compact default that fits a README, `--columns` and
`--wide`, the lm-eval group, and a legend that describes what the tables show (the token floors
included)."""

import json
import re
import sys
from pathlib import Path

import pytest
from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app, main
from speckd_bench.evaluation.floors import TOKEN_FLOORS
from speckd_bench.formatting import md_escape
from speckd_bench.leaderboard.columns import GROUPS
from speckd_bench.leaderboard.render import render
from speckd_bench.leaderboard.selection import select_sections
from speckd_bench.publish.results_readme import details

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
_MAKEFILE_METRICS = re.search(r"^LEADERBOARD_METRICS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)
README_METRICS = _MAKEFILE_METRICS[1].split()
"""The metrics `make leaderboard-report` renders the committed results with, read from the Makefile."""
MAX_WIDTH = 160
CORE_HEADER = (
    "| method | n | rougeL (mean ± std) | Δ rougeL vs fkl [seed t-CI, Holm] | degenerate | diverged |"
)
LM_EVAL = {"arc_easy": (0.5, 0.6), "speckd_dolly": (20.0, 22.0)}
"""lm-eval task -> (fkl seed 1, fkl seed 2) score."""


def _lm_eval(task_scores: dict[str, float]) -> dict:
    """record.lm_eval as run_lm_eval stores it."""
    metric = {"arc_easy": "acc,none", "speckd_dolly": "rougeL,none"}
    results = {
        t: {"alias": t, metric[t]: v, metric[t].replace(",", "_stderr,"): 0.01}
        for t, v in task_scores.items()
    }
    return {"tasks": list(task_scores), "limit": 4, "results": results, "lm_eval_version": "0.4.9"}


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """fkl (with lm-eval scores), speckd and sft over two seeds, with fidelity metrics and every floor."""
    out = tmp_path_factory.mktemp("columns")
    floors = {
        "empty": ("", {"rougeL": 0.0}),
        "constant": ("It is a the of and to in", {"rougeL": 9.0}),
        "echo_instruction": ("<instruction>", {"rougeL": 12.0}),
        "unigram_tokens": ("<unigram>", {"tf_top1": 3.0, "tf_fkl": 6.0}),
        "bigram_tokens": ("<bigram>", {"tf_top1": 9.0, "tf_fkl": 4.0}),
    }
    for i, method in enumerate(("fkl", "speckd", "sft")):
        for seed in (1, 2):
            record = write_run(
                out,
                method=method,
                seed=seed,
                scores={10: [10.0 + i + seed, 20.0, 30.0]},
                losses=[1.0] * 6,
                teacher={"rougeL": 40.0, "tf_top1": 100.0, "tf_fkl": 0.0},
                floors=floors,
                fidelity={"tf_top1": [40.0 + i, 50.0, 60.0], "tf_fkl": [2.0 - 0.1 * i + 0.01 * seed] * 3},
            )
            if method == "fkl":
                record["lm_eval"] = _lm_eval({t: v[seed - 1] for t, v in LM_EVAL.items()})
                path = out / "runs" / record["run_id"] / "record.json"
                path.write_text(json.dumps(record))
    return out


def _table(results: Path, *args: str) -> str:
    res = runner.invoke(app, ["table", "--results-dir", str(results), "--baseline", "fkl", *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.stdout


def _header(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("| method"))


def _table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def test_default_table_is_the_core_group(board):
    md = _table(board, "--format", "md")
    assert _header(md) == CORE_HEADER
    fkl = next(line for line in _table_lines(md) if line.startswith("| fkl "))
    assert fkl == "| fkl | 2 | 20.50 ± 0.24 | baseline | - | 0/2 |"  # (20.33, 20.67)
    assert all(len(line) <= MAX_WIDTH for line in _table_lines(md))


def test_readme_table_of_the_committed_records_fits_160_characters(first_leaderboard):
    sections = select_sections(first_leaderboard, baseline="fkl", metrics=README_METRICS)
    md = render(sections, "md")
    lines = _table_lines(md)
    assert len(lines) == 2 + 7 + 7  # header, rule, 7 reference rows, 7 methods
    assert max(map(len, lines)) <= MAX_WIDTH
    judged = sections[0].metrics[0]  # the first of README_METRICS the records have
    assert judged in README_METRICS and lines[0].count(" (mean ± std) |") == 1
    assert f"| {md_escape(judged)}" in lines[0] and "rougeL\\_teacher" not in lines[0]


def test_groups_add_their_columns_and_wide_shows_every_one(board):
    fidelity = _header(_table(board, "--format", "md", "--columns", "fidelity"))
    assert "| tf\\_top1 (mean ± std) | Δ tf\\_top1 vs fkl [seed t-CI, Holm] |" in fidelity
    assert "| tf\\_fkl ↓ (mean ± std) |" in fidelity and "wall min" not in fidelity
    both = _header(_table(board, "--format", "md", "--columns", "timing, degeneracy"))
    assert both.endswith("| empty % | distinct-2 | rep | degenerate | diverged | train tok/s | wall min |")
    wide = _header(_table(board, "--format", "md", "--wide"))
    for name in (
        "prompt-bootstrap CI",
        "tf\\_fkl",
        "spikes/run",
        "wall min",
        "lm-eval arc\\_easy acc",
        "rep",
    ):
        assert name in wide
    assert wide.count(" | ") > CORE_HEADER.count(" | ") + 15


def test_unknown_group_is_a_one_line_error_listing_the_groups(board, monkeypatch, capsys):
    argv = ["speckd-bench", "table", "--results-dir", str(board), "--columns", "fidelity,timings"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "--columns 'timings' is not a column group (did you mean timing?)" in err
    assert f"groups: {', '.join(GROUPS)}" in err


def test_lm_eval_scores_form_their_own_group(board):
    default = _table(board, "--format", "md")
    assert "lm-eval" not in default
    md = _table(board, "--format", "md", "--columns", "lm-eval")
    header = _header(md)
    assert "| lm-eval arc\\_easy acc (mean ± std) | lm-eval speckd\\_dolly rougeL (mean ± std) |" in header
    fkl = next(line for line in _table_lines(md) if line.startswith("| fkl "))
    assert "| 0.55 ± 0.07 | 21.00 ± 1.41 |" in fkl
    sft = next(line for line in _table_lines(md) if line.startswith("| sft "))
    assert "| - | - |" in sft
    assert "lm-evaluation-harness score of the trained student" in md
    rows = json.loads(_table(board, "--format", "json"))
    fkl_row = next(r for r in rows if r.get("method") == "fkl" and r["kind"] == "method")
    assert fkl_row["lm_eval"]["arc_easy acc"] == {
        "mean": 0.55,
        "std": pytest.approx(0.0707, abs=1e-4),
        "n": 2,
        "per_run": [0.5, 0.6],
    }
    csv_header = _table(board, "--format", "csv").splitlines()[0].split(",")
    assert "lm_eval_arc_easy acc" in csv_header and "lm_eval_speckd_dolly rougeL" in csv_header


def test_the_legend_describes_the_shown_columns_and_the_token_floors(board):
    default = _table(board, "--format", "md")
    assert "Spikes/run" not in default and "lm-eval" not in default  # columns it does not show
    for kind, what in TOKEN_FLOORS.items():
        assert f"floor: {kind} tokens, {what}" in default  # the reference rows' legend
    fidelity = _table(board, "--format", "md", "--columns", "fidelity")
    assert "tf_top1: teacher-forced top-1 agreement with the teacher (%)" in fidelity
    assert (
        "The tf_* columns' floors are the token floor rows (floor: unigram tokens, floor: bigram tokens)"
        in (fidelity)
    )
    rows = {line.split(" | ")[0]: line for line in _table_lines(fidelity)}
    assert "*3.00*" in rows["| *floor: unigram tokens*"] and "*9.00*" in rows["| *floor: bigram tokens*"]


LEADERBOARD_METRICS = ["tf_tvd", "tf_top1", "rougeL_teacher", "tf_fkl", "tf_rkl", "rougeL"]
"""The Makefile's LEADERBOARD_METRICS."""


def _detail_tables(lines: list[str]) -> dict[str, list[list[str]]]:
    """The README's detail tables: group -> its tables (markdown lines each)."""
    tables: dict[str, list[list[str]]] = {}
    group = None
    for line in lines:
        if line.startswith("**dolly, "):
            group = line.removeprefix("**dolly, ").removesuffix("**")
            tables[group] = []
        elif line.startswith("|"):
            if line.startswith("| method"):
                tables[group].append([])
            tables[group][-1].append(line)
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_readme_detail_tables_of_the_committed_sweep_fit_160_characters_and_hold_every_group_column(
    first_leaderboard,
):
    sections = select_sections(first_leaderboard, baseline="fkl", metrics=LEADERBOARD_METRICS)
    lines = details(sections)
    tables = _detail_tables(lines)
    assert list(tables) == ["fidelity", "text", "intervals", "degeneracy", "stability", "timing"]
    assert max(len(line) for t in tables.values() for table in t for line in table) <= MAX_WIDTH
    wide = render(sections, "md", GROUPS)
    wide_header = _cells(_header(wide))
    methods = [_cells(line)[:2] for line in _table_lines(wide)[2:] if not line.startswith("| *")]
    for group, group_tables in tables.items():
        shown = [h for table in group_tables for h in _cells(table[0])[2:]]
        assert len(shown) > 1 and all(h in wide_header for h in shown)
        if group in ("stability", "timing"):  # every method row, in the leaderboard's order
            assert [_cells(line)[:2] for line in group_tables[0][2:]] == methods
    assert len(tables["fidelity"]) == 2  # four metrics with their Δ: split to fit
    for group in ("fidelity", "text"):  # the wide table's cells, the same in the detail tables
        for table in tables[group]:
            for line in table[2:]:
                row = next(r for r in _table_lines(wide) if _cells(r)[:2] == _cells(line)[:2])
                for header, cell in zip(_cells(table[0])[2:], _cells(line)[2:], strict=True):
                    assert _cells(row)[wide_header.index(header)] == cell
    assert any(line.startswith("Degeneracy of the outputs: empty %") for line in lines)  # the group's legend


def test_readme_detail_tables_leave_out_rows_without_a_value_and_show_lm_eval(board):
    sections = select_sections(board, baseline="fkl")
    tables = _detail_tables(details(sections))
    assert "lm-eval" in tables and "fidelity" in tables
    (lm_eval,) = tables["lm-eval"]
    assert lm_eval == [
        "| method | lm-eval arc\\_easy acc (mean ± std) | lm-eval speckd\\_dolly rougeL (mean ± std) |",
        "|---|---|---|",
        "| fkl | 0.55 ± 0.07 | 21.00 ± 1.41 |",  # speckd and sft recorded no lm-eval score
    ]
    fidelity = [line for table in tables["fidelity"] for line in table]
    (unigram,) = [_cells(line) for line in fidelity if line.startswith("| *floor: unigram tokens*")]
    assert unigram[1:] == ["*6.000*", "", "*3.00*", ""]  # tf_fkl (3 decimals), its Δ, tf_top1, its Δ
    assert not any(line.startswith("| *floor: empty*") for line in fidelity)  # no fidelity value
