"""Each metric is shown with the decimals its differences need (formatting.metric_digits): tf_tvd with 4,
tf_fkl and tf_rkl with 3, the others with 2, in every table, the results README's sentences, the floor
verdict and the model card; the CSV keeps full precision."""

import csv
import io
from pathlib import Path

import pytest
from rich.console import Console
from synthetic_records import write_run

from speckd_bench.formatting import metric_digits
from speckd_bench.leaderboard.columns import GROUPS
from speckd_bench.leaderboard.render import print_rich, render
from speckd_bench.leaderboard.selection import select_sections
from speckd_bench.publish.hub_export import _scores
from speckd_bench.publish.results_readme import significance
from speckd_bench.records.run_record import RunRecord

METRICS = ["tf_tvd", "tf_fkl", "rougeL"]
RUNS = {  # method -> per training seed (1, 2, 3): (tf_tvd, tf_fkl, rougeL)
    "fkl": [(0.6040, 2.000, 21.0), (0.6052, 2.010, 22.0), (0.6028, 2.020, 23.0)],
    "speckd": [(0.5988, 1.970, 22.0), (0.6000, 1.990, 24.0), (0.6012, 1.980, 23.0)],
}
UNIGRAM = {"tf_tvd": 0.81234, "tf_fkl": 4.5678}
"""The unigram token floor's scores: more decimals than any table shows."""


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """fkl and speckd over three seeds whose tf_tvd means differ by 0.004 (paired differences -0.0052,
    -0.0052, -0.0016), with a unigram token floor."""
    out = tmp_path_factory.mktemp("digits")
    for method, runs in RUNS.items():
        for seed, (tvd, fkl, rouge) in enumerate(runs, start=1):
            write_run(
                out,
                method=method,
                seed=seed,
                scores={10: [rouge] * 3},
                losses=[1.0] * 4,
                floors={"unigram_tokens": ("<unigram>", UNIGRAM)},
                fidelity={"tf_tvd": [tvd] * 3, "tf_fkl": [fkl] * 3},
            )
    return out


def _md_row(md: str, method: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {method} |"))


def test_digits_per_metric():
    assert [metric_digits(m) for m in ("tf_tvd", "tf_tvd_prompt", "tf_fkl", "tf_rkl_prompt")] == [4, 4, 3, 3]
    others = ("rougeL", "tf_top1", "tf_top1_prompt", "bleu", "exact_match")
    assert [metric_digits(m) for m in others] == [2] * len(others)


def test_tables_show_a_tf_tvd_difference_of_0_004(board):
    sections = select_sections(board, baseline="fkl", metrics=METRICS)
    md = render(sections, "md", GROUPS)
    fkl, speckd = _md_row(md, "fkl"), _md_row(md, "speckd")
    assert "| 0.6040 ± 0.0012 | baseline |" in fkl
    # diffs mean -0.004, sd 0.00208: ± t(0.975, 2) × 0.0012 = ± 0.00516
    assert "| **0.6000 ± 0.0012** | -0.0040 [-0.0092, +0.0012] |" in speckd
    assert "| 2.010 ± 0.010 | baseline |" in fkl
    assert "| **1.980 ± 0.010** | -0.030 [-0.055, -0.005] † |" in speckd  # diffs -0.03, -0.02, -0.04
    assert "| 22.00 ± 1.00 | baseline |" in fkl
    assert "| **23.00 ± 1.00** | +1.00 [-1.48, +3.48] |" in speckd  # diffs +1, +2, 0
    assert "| -0.0040 [" in speckd  # the prompt bootstrap of tf_tvd
    floor = _md_row(md, "*floor: unigram tokens*")
    assert "| *0.8123* |" in floor and "| *4.568* |" in floor


@pytest.mark.parametrize("fmt", ["rich", "latex", "html"])
def test_every_table_format_shows_the_digits(board, fmt):
    rendered = render(select_sections(board, baseline="fkl", metrics=METRICS), fmt, GROUPS)
    if fmt == "rich":
        buf = io.StringIO()
        print_rich(rendered, Console(width=400, file=buf, color_system=None))
        rendered = buf.getvalue()
    pm = r"$\pm$" if fmt == "latex" else "±"
    for text in (
        f"0.6000 {pm} 0.0012",
        "-0.0040 [-0.0092, +0.0012]",
        f"1.980 {pm} 0.010",
        f"23.00 {pm} 1.00",
    ):
        assert text in rendered


def test_csv_keeps_full_precision(board):
    text = render(select_sections(board, baseline="fkl", metrics=METRICS), "csv")
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(text))}
    floor, speckd = rows["floor: unigram tokens"], rows["speckd"]
    assert float(floor["tf_tvd_mean"]) == pytest.approx(UNIGRAM["tf_tvd"])
    assert float(floor["tf_fkl_mean"]) == pytest.approx(UNIGRAM["tf_fkl"])
    assert float(speckd["tf_tvd_delta_low"]) == pytest.approx(-0.004 - 4.302653 * 0.0012)


def test_sentences_quote_the_metric_with_its_digits(board):
    sections = select_sections(board, baseline="fkl", metrics=METRICS)
    (sentence,) = significance(sections, "speckd", "fkl")
    assert "scores 0.6000 ± 0.0012 (n=3) against fkl's 0.6040 ± 0.0012 (n=3)" in sentence
    assert "a difference of -0.0040 with a 95.0% paired t-interval" in sentence
    assert "over training seeds of [-0.0092, +0.0012]" in sentence
    assert "best method speckd (tf_tvd 0.6000) beats every floor" in sections[0].floor_verdict
    assert "(best floor: floor: unigram tokens 0.8123)" in sections[0].floor_verdict


def test_model_card_scores_use_the_metric_digits(tmp_path):
    record = write_run(
        tmp_path, method="fkl", seed=1, scores={10: [21.0]}, losses=[1.0], fidelity={"tf_tvd": [0.60123]}
    )
    lines = _scores(RunRecord.from_json(record))
    assert "| tf_tvd | - | - | 0.6012 | - |" in lines and "| rougeL | 1.00 | 5.00 | 21.00 | - |" in lines
