"""`speckd-bench plot` writes readable PNG files: curves with a band over seeds, metric bars with the
reference lines and a forest plot of the Δ to the baseline; every metric axis names its unit and way."""

import pytest
from matplotlib.text import Text
from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.report import build_sections
from speckd_bench.publish.plots import (
    _colors,
    _reference_lines,
    axis_label,
    bar_figure,
    curve_figure,
    forest_figure,
)
from speckd_bench.records.store import load_records

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _board(root, gated: bool):
    for method in ("fkl", "speckd") if gated else ("fkl", "sft"):
        for seed in (1, 2):
            write_run(
                root,
                method=method,
                seed=seed,
                scores={10: [10.0 + seed, 20.0, 30.0]},
                losses=[2.0 / (i + 1) + 0.1 * seed for i in range(12)],
                grad_norms=[1.0 + 0.1 * (i % 3) for i in range(12)],
                tars=[0.2 + 0.05 * i for i in range(12)] if method == "speckd" else None,
            )


def test_plot_writes_non_empty_pngs(tmp_path):
    _board(tmp_path, gated=True)
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    written = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert written == sorted(
        [
            "dolly-default_loss.png",
            "dolly-default_grad_norm.png",
            "dolly-default_tar.png",
            "dolly-default_dolly_rougeL.png",
        ]
    )
    for name in written:
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert res.stdout.count(".png") == 4


def test_plot_without_gated_runs_has_no_tar_figure_and_honours_out(tmp_path):
    _board(tmp_path, gated=False)
    out = tmp_path / "figures"
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path), "--out", str(out), "--method", "fkl"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert sorted(p.name for p in out.glob("*.png")) == [
        "dolly-default_dolly_rougeL.png",
        "dolly-default_grad_norm.png",
        "dolly-default_loss.png",
    ]


def test_bars_draw_the_teacher_and_the_best_floor(tmp_path):
    for seed in (1, 2):
        write_run(
            tmp_path,
            method="fkl",
            seed=seed,
            scores={10: [10.0 + seed, 20.0]},
            losses=[1.0] * 12,
            teacher={"rougeL": 40.0},
            floors={"empty": ("", {"rougeL": 0.0}), "constant": ("The", {"rougeL": 12.0})},
        )
    sections = build_sections(load_records(tmp_path).records, tmp_path)
    lines = [(row.label, row.mean("rougeL")) for row, _ in _reference_lines(sections[0], "rougeL")]
    assert lines == [("init student", 5.0), ("teacher", 40.0), ("floor: constant 'The'", 12.0)]
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (tmp_path / "plots" / "dolly-default_dolly_rougeL.png").read_bytes().startswith(PNG)


def _forest_board(root):
    """fkl, speckd (+5 on every prompt, three seeds: significant) and sft (one seed: no interval)."""
    for seed in (1, 2, 3):
        for method, shift in (("fkl", 0.0), ("speckd", 5.0 + 0.1 * seed)):
            write_run(
                root, method=method, seed=seed, scores={10: [10.0 + shift + seed, 20.0]}, losses=[1.0] * 4
            )
    write_run(root, method="sft", seed=1, scores={10: [9.0, 19.0]}, losses=[1.0] * 4)
    return build_sections(load_records(root).records, root, baseline="fkl")


def test_metric_axes_name_the_unit_and_which_way_is_better(tmp_path):
    assert axis_label("tf_tvd") == "tf_tvd [0-1 per token] ↓ (lower is better)"
    assert axis_label("tf_top1_prompt") == "tf_top1_prompt [% of tokens] ↑ (higher is better)"
    (section,) = _forest_board(tmp_path)
    fig = bar_figure(section, "rougeL", {g.label: "C0" for g in section.groups})
    assert fig.axes[0].get_ylabel() == "rougeL [0-100] ↑ (higher is better)"


def test_forest_plot_shows_each_delta_with_its_interval_and_holm_mark(tmp_path):
    (section,) = _forest_board(tmp_path)
    fig = forest_figure(section, {g.label: "C0" for g in section.groups})
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_xlabel() == "Δ rougeL [0-100] ↑ (higher is better)\nbetter than fkl: to the right"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["speckd (n=3)", "sft (n=1)"]
    speckd = next(r for r in section.methods if r.method == "speckd").delta["rougeL"]
    assert speckd.significant and speckd.diff == pytest.approx(2.6)  # mean over the prompts: +5.2 / 2
    drawn = {round(float(line.get_xdata()[0]), 3) for line in ax.lines if len(line.get_xdata()) == 1}
    assert {2.6, -2.0} <= drawn  # speckd's point (with its error bar), sft's hollow point (14 vs 16)
    (bar,) = ax.containers  # one error bar: sft has no interval with one seed
    ((start, end),) = bar.lines[2][0].get_segments()
    assert (start[0], end[0]) == pytest.approx((speckd.low, speckd.high))
    assert [t.get_text() for t in ax.texts] == ["†"]
    assert "† = significant after Holm" in " ".join(fig.texts[0].get_text().split())


def test_plot_with_a_baseline_writes_the_forest_plot(tmp_path):
    _forest_board(tmp_path)
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path), "--baseline", "fkl"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (tmp_path / "plots" / "dolly-default_dolly_delta.png").read_bytes().startswith(PNG)
    section = _forest_board(tmp_path / "none")[0]
    section.groups = [g for g in section.groups if g.method == "fkl"]
    assert forest_figure(section, {}) is None  # nothing compared with the baseline


ARMS = [
    *[(m, {}) for m in ("fkl", "sft", "rkl", "jsd", "srkl")],
    *[
        ("speckd", {"method.gate": gate, "method.gate_match": gate != "speckd", "method.rule": rule})
        for gate in ("speckd", "random", "confidence")
        for rule in ("topk", "spec")
    ],
]
"""The reference grid's eleven arms, six of them speckd told apart by long settings labels."""


def _drawn_tick_labels(axis, low: float, high: float, minor: bool = False) -> list[Text]:
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    return [
        t.label1 for t in ticks if min(low, high) <= t.get_loc() <= max(low, high) and t.label1.get_text()
    ]


def _inside_and_apart(fig) -> None:
    """Every text `fig` draws (titles, axis labels, legends, the tick labels within the view) lies on its
    canvas, and no two major tick labels of an axis overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    texts = [*fig.texts]
    for ax in (a for a in fig.axes if a.get_visible()):
        texts += [
            ax.title,
            ax.xaxis.label,
            ax.yaxis.label,
            *(ax.get_legend().get_texts() if ax.get_legend() else []),
        ]
        for axis, view in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            major = _drawn_tick_labels(axis, *view)
            texts += major + _drawn_tick_labels(axis, *view, minor=True)
            boxes = [t.get_window_extent(renderer) for t in major]
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    for text in texts:
        box = text.get_window_extent(renderer)
        if text.get_visible() and text.get_text():
            inside = canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1
            assert inside and canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, text.get_text()


def test_the_eleven_arms_of_the_reference_grid_get_legible_figures(tmp_path):
    """Each arm its own colour in every figure; titles, legends and bar labels stay on the canvas and
    apart, however long the settings labels."""
    for seed in (1, 2, 3):
        for i, (method, settings) in enumerate(ARMS):
            scores = {10: [10.0 + i + 0.1 * seed, 20.0]}
            tars = [0.5] * 6 if method == "speckd" else None
            losses = [1.0 + i] * 6
            write_run(
                tmp_path, method=method, seed=seed, settings=settings, scores=scores, losses=losses, tars=tars
            )
    (section,) = build_sections(load_records(tmp_path).records, tmp_path, baseline="fkl")
    labels = [g.label for g in section.groups]
    assert len(labels) == 11 and "speckd (gate=confidence, gate_match=True, rule=spec)" in labels
    colors = _colors(labels)
    assert len(set(colors.values())) == 11
    figures = [bar_figure(section, "rougeL", colors), forest_figure(section, colors)]
    figures += [curve_figure(section.groups, field, section, colors) for field in ("loss", "tar")]
    for fig in figures:
        _inside_and_apart(fig)
