"""Learning curves (record["training"]["curve"]): one figure per metric and section, a line per method at
the mean over its training seeds with a min-to-max band, runs aligned on their common steps; `report`,
`plot` and the HTML page write and show them, and sections whose runs recorded none get none."""

import json
import re

import pytest
from matplotlib.collections import PolyCollection
from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.curves import curve_metrics, group_curve
from speckd_bench.leaderboard.report import build_sections
from speckd_bench.publish.html_page import render_page
from speckd_bench.publish.plots import curve_paths, learning_curve_figure
from speckd_bench.records.store import load_records

runner = CliRunner()
STEPS = [0, 5, 10, 12]
OFFSETS = {1: 0.0, 2: 0.03, 3: 0.09}
"""tf_tvd of seed s at step t: 0.5 - 0.02 t (+ 0.1 for sft) + OFFSETS[s]: over seeds 1-3 the mean is
0.04 above the seed-free value, the band 0.0 to 0.09 above it."""
CURVE_FILES = ["dolly-default_curve_tf-tvd.png", "dolly-default_curve_tf-top1.png"]
"""What report draws: the section's metrics (rougeL, then the recorded fidelity ones) that curves hold."""


def _points(seed: int, steps: list[int], shift: float = 0.0) -> list[dict]:
    return [
        {
            "step": t,
            "tf_fkl": 2.0 - 0.1 * t + OFFSETS[seed],
            "tf_rkl": 1.5 - 0.1 * t,
            "tf_tvd": 0.5 - 0.02 * t + shift + OFFSETS[seed],
            "tf_top1": 40.0 + 2.0 * t,
            "seconds": 0.5,
        }
        for t in steps
    ]


def _run(root, method: str, seed: int, curve: list[dict] | None) -> None:
    fidelity = {"tf_tvd": [0.2, 0.3], "tf_top1": [60.0 + seed, 62.0]}
    record = write_run(
        root, method=method, seed=seed, scores={10: [10.0 + seed, 20.0]}, losses=[1.0] * 12, fidelity=fidelity
    )
    if curve is not None:
        record["training"]["curve"] = curve
        (root / "runs" / record["run_id"] / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """fkl: seeds 1-3 with curves; speckd: seeds 1, 2; sft: seeds 1-3 whose steps differ (seed 2 scored
    step 4, not 5) and seed 3 without a curve."""
    root = tmp_path_factory.mktemp("curves")
    for seed in (1, 2, 3):
        _run(root, "fkl", seed, _points(seed, STEPS))
    for seed in (1, 2):
        _run(root, "speckd", seed, _points(seed, STEPS, shift=-0.2))
    _run(root, "sft", 1, _points(1, STEPS, shift=0.1))
    _run(root, "sft", 2, _points(2, [0, 4, 10, 12], shift=0.1))
    _run(root, "sft", 3, None)
    return root


def _section(root, metrics=None):
    (section,) = build_sections(load_records(root).records, root, metrics=metrics, baseline="fkl")
    return section


def _colors(section):
    return {g.label: f"C{i}" for i, g in enumerate(section.groups)}


def test_one_line_per_method_at_the_mean_over_seeds_with_a_min_to_max_band(board):
    section = _section(board)
    fig = learning_curve_figure(section, "tf_tvd", _colors(section))
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"fkl (n=3)", "speckd (n=2)", "sft (n=2)"}
    assert ax.get_xlabel() == "optimiser step"
    assert ax.get_ylabel() == "tf_tvd [0-1 per token] ↓ (lower is better)"
    title = " ".join(fig.texts[0].get_text().split())  # the title, wrapped to the figure's width
    assert "band = min to max" in title and "the first 2 rows of dolly" in title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [line for line in lines]
    fkl = lines["fkl (n=3)"]
    assert list(fkl.get_xdata()) == STEPS
    assert fkl.get_ydata()[2] == pytest.approx(0.5 - 0.2 + (0.0 + 0.03 + 0.09) / 3)  # step 10
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3
    ys = bands[0].get_paths()[0].vertices[:, 1]  # fkl's band: min and max over its seeds at each step
    assert ys.min() == pytest.approx(0.5 - 0.24 + 0.0) and ys.max() == pytest.approx(0.5 + 0.09)


def test_runs_whose_steps_differ_are_aligned_on_the_common_steps_with_a_note(board):
    section = _section(board)
    sft = group_curve(next(g for g in section.groups if g.method == "sft"), "tf_tvd")
    assert list(sft.steps) == [0, 10, 12] and sft.n == 2
    assert sft.mean[1] == pytest.approx(0.5 - 0.2 + 0.1 + 0.015)
    assert sft.note == (
        "sft: 1 of its 3 runs recorded no tf_tvd curve; 2 step(s) not scored by all its 2 curves left out"
    )
    title = learning_curve_figure(section, "tf_tvd", _colors(section)).texts[0].get_text()
    assert sft.note in " ".join(title.split())


def test_the_metrics_asked_first_else_every_metric_the_curves_hold(board):
    assert _section(board).metrics == ["rougeL", "tf_tvd", "tf_top1"]
    assert curve_metrics(_section(board)) == ["tf_tvd", "tf_top1"]  # rougeL: no curve holds it
    assert curve_metrics(_section(board, ["tf_top1", "rougeL", "tf_tvd"])) == ["tf_top1", "tf_tvd"]
    assert curve_metrics(_section(board, ["rougeL"])) == ["tf_fkl", "tf_rkl", "tf_tvd", "tf_top1"]


def test_report_writes_lists_and_links_the_curves(board, tmp_path):
    readme = tmp_path / "README.md"
    res = runner.invoke(app, ["report", "--results-dir", str(board), "--out", str(readme)])
    assert res.exit_code == 0, (res.output, res.exception)
    text = readme.read_text()
    for name in CURVE_FILES:
        assert (board / "plots" / name).read_bytes().startswith(b"\x89PNG")
        assert str(board / "plots" / name) in res.stdout and text.count(f"/plots/{name})") == 1
    curves_part = text.split("## Learning curves", 1)[1].split("## Plots", 1)[0]
    assert all(f"/plots/{name})" in curves_part for name in CURVE_FILES)  # under their own heading
    section = _section(board)
    ((listed, paths),) = curve_paths([section], board / "plots")
    assert listed is section and [p.name for p in paths] == CURVE_FILES


def test_plot_draws_the_curves_of_the_metric_asked_and_leaves_them_out_on_request(board, tmp_path):
    out = tmp_path / "asked"
    res = runner.invoke(app, ["plot", "--results-dir", str(board), "--out", str(out), "--metric", "tf_top1"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert sorted(p.name for p in out.glob("*curve*")) == ["dolly-default_curve_tf-top1.png"]
    out = tmp_path / "none"
    res = runner.invoke(app, ["plot", "--results-dir", str(board), "--out", str(out), "--no-curves"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert not list(out.glob("*curve*")) and list(out.glob("*.png"))


def test_the_html_page_shows_the_curves_under_their_own_heading(board):
    page = render_page([_section(board)], baseline="fkl", method="speckd", command=None)
    curves = page.split("<h2>Learning curves</h2>")[1].split("<h2>Plots</h2>")[0]
    assert re.findall(r"<figcaption>([^<]+)</figcaption>", curves) == [n[:-4] for n in CURVE_FILES]


def test_sections_without_curves_get_no_curve_figure(tmp_path):
    for method in ("fkl", "speckd"):
        _run(tmp_path, method, 1, None)
    section = _section(tmp_path)
    assert curve_metrics(section) == [] and learning_curve_figure(section, "tf_tvd", _colors(section)) is None
    assert curve_paths([section], tmp_path / "plots") == [(section, [])]
    res = runner.invoke(app, ["report", "--results-dir", str(tmp_path), "--out", str(tmp_path / "R.md")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert list((tmp_path / "plots").glob("*.png")) and not list((tmp_path / "plots").glob("*curve*"))
    assert "## Learning curves" not in (tmp_path / "R.md").read_text()
    page = render_page([section], baseline="fkl", method="speckd", command=None)
    assert "Learning curves" not in page and "<h2>Plots</h2>" in page
