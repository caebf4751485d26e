"""How the leaderboard reaches its reader: a rich table in a narrow terminal wraps between words and never
splits a number, output to anything but a terminal is never wrapped, LaTeX leads with the compact table,
and the help of the options says what the tool does."""

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.render import headers, print_rich, render, table_cells
from speckd_bench.leaderboard.selection import select_sections

runner = CliRunner()
METRICS = ["tf_top1", "rougeL_teacher", "tf_fkl", "tf_rkl", "rougeL"]


@pytest.fixture(scope="module")
def sections(first_leaderboard):
    """The committed records: settings (speckd rule=...), degenerate reference rows, Δ with †."""
    return select_sections(first_leaderboard, baseline="fkl", metrics=METRICS)


def _number_words(sections, groups) -> set[str]:
    """Every word of a table cell with a digit in it: a mean, a bound, a count, a share."""
    cells = [t for s in sections for row in table_cells(s, groups)[1] for t, _ in row]
    return {w for t in cells for w in t.split() if any(ch.isdigit() for ch in w)}


@pytest.mark.parametrize("groups", [("core",), ("core", "stability")])
def test_a_narrow_terminal_wraps_cells_between_words_and_never_splits_a_number(sections, groups):
    buf = io.StringIO()
    console = Console(width=80, file=buf, force_terminal=True, color_system=None)
    print_rich(render(sections, "rich", groups), console)
    lines = buf.getvalue().splitlines()
    if groups == ("core",):
        assert max(map(len, lines)) <= 80  # the compact table fits
    # wider than the terminal (12 columns): the terminal wraps the lines, nothing is cropped
    assert all(line.endswith(("│", "┃", "┓", "┩", "┘")) for line in lines if line.startswith(("│", "┃", "┏")))
    words = _number_words(sections, groups)
    assert "+1.95" in words and "40.52" in words  # rkl's Δ tf_top1 and mean
    missing = [w for w in words if not any(re.search(rf"(^|\s){re.escape(w)}(\s|$)", line) for line in lines)]
    assert missing == []


def test_the_default_table_keeps_each_cell_on_one_line_where_it_fits(sections):
    buf = io.StringIO()
    print_rich(render(sections, "rich"), Console(width=200, file=buf, force_terminal=True, color_system=None))
    text = buf.getvalue()
    assert "40.52 ± 0.20" in text and "+1.95 [+0.50, +3.40] †" in text


def test_piped_output_is_never_wrapped(first_leaderboard):
    args = ["table", "--results-dir", str(first_leaderboard), "--baseline", "fkl", "--wide"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    lines = res.stdout.splitlines()
    border = [line for line in lines if line.startswith("┏")]
    assert len(border) == 1 and len(border[0]) > 240  # wider than any terminal it was not fitted to
    table = lines[
        lines.index(border[0]) : next(i for i, line in enumerate(lines) if line.startswith("└")) + 1
    ]
    assert len({len(line) for line in table}) == 1  # every row on one line, as wide as the border
    rkl = next(line for line in table if line.startswith("│ rkl "))
    assert "40.52 ± 0.20" in rkl and "+1.95 [+0.50, +3.40] †" in rkl and rkl.rstrip().endswith("│")
    legend = next(line for line in lines if line.startswith("Reference rows"))
    assert "Wall min: per run, mean." in legend  # the whole legend on one line


def test_latex_leads_with_the_compact_table_then_one_table_per_group(sections):
    tex = render(sections, "latex", ("core", "stability", "timing"))
    tabulars = re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, re.S)
    assert [spec for spec, _ in tabulars] == ["llrrrrr", "llrrrrr", "llrr"]
    heads = [body.split("\\toprule\n")[1].split(" \\\\")[0] for _, body in tabulars]
    core = render(sections, "latex").split("\\midrule")[0]
    assert heads[0] in core  # the same compact table as without --columns
    assert heads[1].startswith("method & settings & final loss") and heads[2].endswith("wall min")
    assert "% dolly, stability" in tex and "% dolly, timing" in tex
    for _, body in tabulars:
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert len({len(re.split(r"(?<!\\)&", line)) for line in rows}) == 1


def test_latex_headers_are_those_of_the_markdown_core_table(sections):
    md_header = " | ".join(headers(table_cells(sections[0])[0]))
    tex = render(sections, "latex")
    assert tex.count("\\begin{tabular}") == len(sections)
    assert md_header.split(" | ")[0] == "method" and "tf\\_top1 (mean $\\pm$ std)" in tex


def _help(command: str) -> str:
    res = runner.invoke(app, [command, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.stdout).split())


@pytest.mark.parametrize("command", ["table", "report"])
def test_the_baseline_help_describes_the_seed_level_t_interval_with_holm(command):
    text = _help(command)
    baseline = text.split("--baseline")[1].split("--metric" if command == "table" else "--method")[0]
    for phrase in (
        "seed-level t-interval over training seeds",
        "paired",
        "Holm correction across",
        "† where",
    ):
        assert phrase in baseline
    assert "prompt bootstrap CI (--columns intervals) is context only" in baseline
    assert "95% paired bootstrap" not in text


def test_the_help_of_table_options_matches_their_behaviour():
    text = _help("table")
    assert "best first by the column's direction (ascending without one)" in text  # --sort
    assert (
        "unwrapped when piped" in text and "latex (the compact table, then one per --columns group)" in text
    )
    assert "UTC without a zone" in text  # --since
    report = _help("report")
    assert "Report only the complete runs of this sweep file's points" in report
    assert "a detail table per column group" in report
