"""`speckd-bench plot` writes readable PNG files: curves with a band over seeds and metric bars with the
reference lines."""

from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.report import build_sections
from speckd_bench.publish.plots import _reference_lines
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
