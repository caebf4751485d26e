"""The leaderboard on synthetic records with hand-computed answers: aggregation, grouping, the baseline
comparison, stability columns, filters, sorting, every output format, the results README."""

import csv
import io
import json
import re
import sys
from html.parser import HTMLParser

import pytest
from synthetic_records import HEALTHY, write_run
from typer.testing import CliRunner

from speckd_bench.api.metrics import METRICS, Better, register_metric
from speckd_bench.cli.app import app, main
from speckd_bench.leaderboard.columns import SIGNIFICANT

runner = CliRunner()
PROMPTS = [10.0, 20.0, 30.0, 40.0]


def _fkl_scores(seed: int) -> list[float]:
    """Seed means 23, 25, 27 for seeds 1, 2, 3: mean 25, sample std 2."""
    return [p + 2.0 * (seed - 2) for p in PROMPTS]


def _speckd_scores(seed: int) -> list[float]:
    """fkl + 1.8, 2.0, 2.2 for seeds 1, 2, 3: seed means 24.8, 27, 29.2 (mean 27, sample std 2.2)."""
    return [s + 2.0 + 0.2 * (seed - 2) for s in _fkl_scores(seed)]


def _jsd_scores(seed: int) -> list[float]:
    """fkl + 1, -1, 0 for seeds 1, 2, 3: seed means 24, 24, 27 (mean 25)."""
    return [s + (1.0, -1.0, 0.0)[seed - 1] for s in _fkl_scores(seed)]


def _losses(seed: int) -> list[float]:
    """A spike (3.0 > 2 x median 1.0) at step 12 for seed 1 only; final losses 0.5, 0.7, 0.9."""
    return [1.0] * 11 + [3.0 if seed == 1 else 1.0] + [0.3 + 0.2 * seed]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    for seed in (1, 2, 3):
        common = {"seed": seed, "losses": _losses(seed), "wall_s": 60.0 * seed}
        write_run(
            out, method="fkl", scores={10: _fkl_scores(seed)}, grad_norms=[1.0, 3.0] * 6 + [1.0], **common
        )
        write_run(
            out,
            method="speckd",
            scores={10: _speckd_scores(seed)},
            tars=[0.2 + 0.05 * i for i in range(13)],
            tokens_per_s=50.0,
            **common,
        )
        write_run(out, method="jsd", scores={10: _jsd_scores(seed)}, diverged=seed == 3, **common)
    for seed in (1, 2):
        write_run(out, method="sft", seed=seed, scores={10: [p - 1.0 for p in PROMPTS]}, losses=[2.0] * 13)
    write_run(
        out,
        method="speckd",
        seed=1,
        scores={10: _fkl_scores(1)},
        losses=[1.0] * 13,
        settings={"method.k": 3},
        tars=[0.1] * 13,
    )
    # other protocols: fewer eval rows; two eval seeds; another teacher, created earlier
    write_run(
        out,
        method="fkl",
        seed=1,
        scores={10: PROMPTS},
        losses=[1.0] * 13,
        settings={"data.max_eval_examples": 4},
    )
    write_run(
        out, method="rkl", seed=1, scores={10: PROMPTS, 20: [p + 4.0 for p in PROMPTS]}, losses=[1.0] * 13
    )
    write_run(
        out,
        method="fkl",
        seed=1,
        scores={10: PROMPTS},
        losses=[1.0] * 13,
        settings={"model.teacher": "other-teacher"},
        created="2025-06-01T00:00:00+00:00",
    )
    return out


def _table(board, *args):
    res = runner.invoke(app, ["table", "--results-dir", str(board), *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _all_rows(board, *args):
    return json.loads(_table(board, "--format", "json", *args).stdout)


def _rows(board, *args):
    """The method rows (no reference rows)."""
    return [r for r in _all_rows(board, *args) if r["kind"] == "method"]


def _main(rows, method, **settings):
    """The row of `method` in the main protocol (default teacher, 100 eval rows, one eval seed)."""
    found = [r for r in rows if r["method"] == method and r["settings"] == settings and _is_main(r)]
    assert len(found) == 1, found
    return found[0]


def _is_main(row):
    p = row["protocol_config"]
    return (p["model.teacher"], p["data.max_eval_examples"], p["eval.seeds"]) == (
        "smollm2-135m-instruct",
        100,
        [10],
    )


def test_aggregates_match_hand_computed_values(board):
    fkl = _main(_rows(board), "fkl")
    assert fkl["n_seeds"] == 3 and fkl["seeds"] == [1, 2, 3]
    assert fkl["mean"] == pytest.approx(25.0) and fkl["std"] == pytest.approx(2.0)
    assert fkl["metrics"]["rougeL"]["per_run"] == pytest.approx([23.0, 25.0, 27.0])
    assert fkl["final_loss"] == pytest.approx(0.7) and fkl["final_loss_std"] == pytest.approx(0.2)
    assert fkl["loss_spikes"] == [1, 0, 0] and fkl["loss_spikes_per_run"] == pytest.approx(1 / 3)
    assert fkl["grad_norm_cv"] == pytest.approx(coefficient([1.0, 3.0] * 6 + [1.0]))
    assert fkl["wall_min"] == pytest.approx(2.0) and fkl["train_tokens_per_s"] == pytest.approx(100.0)
    assert fkl["tar_mean"] is None and fkl["diverged"] == 0 and fkl["degeneracy"] is None
    speckd = _main(_rows(board), "speckd", **{"method.k": 5})
    assert speckd["tar_mean"] == pytest.approx(0.2 + 0.05 * 6)
    assert _main(_rows(board), "jsd")["diverged"] == 1


def coefficient(values):
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 / mean


def test_groups_differing_in_anything_but_the_seed_are_kept_apart(board):
    rows = _rows(board)
    k5, k3 = _main(rows, "speckd", **{"method.k": 5}), _main(rows, "speckd", **{"method.k": 3})
    assert k5["n_seeds"] == 3 and k3["n_seeds"] == 1 and k3["mean"] == pytest.approx(23.0)
    fkl_rows = [r for r in rows if r["method"] == "fkl"]
    assert sorted(r["n_seeds"] for r in fkl_rows) == [1, 1, 3]
    assert len({r["protocol"] for r in fkl_rows}) == 3
    assert any("4 eval rows" in r["protocol"] for r in fkl_rows)


def test_the_protocol_is_printed_with_each_table(board):
    md = _table(board, "--format", "md").stdout
    protocols = [line for line in md.splitlines() if line.startswith("**dolly**:")]
    assert len(protocols) == 4
    assert all("greedy, 64 new tokens" in p and "train rows" in p and "steps" in p for p in protocols)
    assert any("eval seeds [10, 20]" in p for p in protocols)


def test_eval_seed_spread(board):
    rkl = next(r for r in _rows(board) if r["method"] == "rkl")
    assert rkl["metrics"]["rougeL"]["eval_seed_std"] == pytest.approx(2.0)
    assert rkl["mean"] == pytest.approx(27.0)
    assert _main(_rows(board), "fkl")["metrics"]["rougeL"]["eval_seed_std"] is None


def test_raw_and_init_students_are_reference_rows(board):
    rows = [r for r in _all_rows(board) if r["kind"] == "reference" and _is_main(r)]
    assert [r["label"] for r in rows] == ["raw student", "init student"]  # old records: no teacher, floors
    assert [r["metrics"]["rougeL"]["mean"] for r in rows] == [1.0, 5.0]
    assert all(r["n_runs"] == 12 and r["degeneracy"] is None for r in rows)


def test_baseline_difference_over_training_seeds_with_holm(board):
    """Family (rougeL vs fkl, seeds 1-3): speckd k=5 diffs (1.8, 2.0, 2.2): sd 0.2, t = 2 / (0.2 / sqrt 3)
    = 17.32, df 2, p = 0.00332; jsd diffs (1, -1, 0): p = 1; sft (seeds 1, 2: 24, 24) against (23, 25, 27),
    Welch: se = sqrt(0 + 4/3), t = -0.866, df 2, p = 0.478; speckd k=3 (one seed) is not tested.
    Holm (m = 3): 3 x 0.00332 = 0.00995, max(0.00995, 2 x 0.478) = 0.956, max(0.956, 1) = 1. speckd's
    interval is at 1 - 0.05/3: 2 -+ t(1 - 0.05/6, 2) 7.6488 x 0.11547 = 2 -+ 0.8832."""
    res = _table(board, "--format", "json", "--baseline", "fkl")
    rows = json.loads(res.stdout)
    shift = _main(rows, "speckd", **{"method.k": 5})["delta"]["rougeL"]
    assert shift["diff"] == pytest.approx(2.0) and shift["paired"] and shift["n"] == shift["n_base"] == 3
    assert shift["low"] == pytest.approx(1.1168, abs=1e-4) and shift["high"] == pytest.approx(
        2.8832, abs=1e-4
    )
    assert shift["p"] == pytest.approx(0.00332, abs=1e-5) and shift["p_holm"] == pytest.approx(3 * shift["p"])
    assert shift["significant"] and shift["confidence"] == pytest.approx(1 - 0.05 / 3)
    same = _main(rows, "jsd")["delta"]["rougeL"]
    assert same["diff"] == pytest.approx(0.0) and same["p"] == pytest.approx(1.0) and not same["significant"]
    sft = _main(rows, "sft")["delta"]["rougeL"]
    assert sft["diff"] == pytest.approx(-1.0) and not sft["paired"] and sft["n"] == 2
    assert sft["p"] == pytest.approx(0.478, abs=1e-3) and sft["p_holm"] == pytest.approx(2 * sft["p"])
    assert sft["confidence"] == pytest.approx(0.975) and not sft["significant"]
    one = _main(rows, "speckd", **{"method.k": 3})["delta"]["rougeL"]
    assert one["diff"] == pytest.approx(-2.0) and one["low"] is None and one["p"] is None
    assert not one["significant"]
    base = _main(rows, "fkl")
    assert base["is_baseline"] and base["delta"]["rougeL"] is None
    assert "no fkl runs" in res.stderr  # the rkl section (two eval seeds) has no fkl baseline


def test_prompt_bootstrap_is_a_separate_column(board):
    rows = _rows(board, "--baseline", "fkl")
    boot = _main(rows, "speckd", **{"method.k": 5})["prompt_bootstrap"]["rougeL"]
    assert boot["diff"] == pytest.approx(2.0) and 1.8 <= boot["low"] <= boot["high"] <= 2.2
    assert boot["seeds_paired"] and boot["n_prompts"] == 4 and "significant" not in boot
    text = _table(board, "--format", "md", "--baseline", "fkl", "--columns", "intervals").stdout
    section = next(c for c in text.split("**dolly**:") if "\n| jsd" in c)
    headers = next(line for line in section.splitlines() if line.startswith("| method")).split(" | ")
    cell = _md_rows(text, "jsd")["speckd k=5"].split(" | ")[
        headers.index("Δ rougeL prompt-bootstrap CI [95%]")
    ]
    assert cell.startswith("+2.00 [") and SIGNIFICANT not in cell


def _md_rows(md: str, section_with: str) -> dict[str, str]:
    """Table lines of the md section that has a row starting with `section_with`, keyed by their first
    two cells (method and settings)."""
    section = next(c for c in md.split("**dolly**:") if f"\n| {section_with}" in c)
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return {" ".join(line.split(" | ")[:2]).strip("| "): line for line in lines}


def test_markers_and_best_values_in_markdown(board):
    md = _table(board, "--format", "md", "--baseline", "fkl", "--wide").stdout
    rows = _md_rows(md, "jsd")
    speckd, jsd, fkl, sft = rows["speckd k=5"], rows["jsd -"], rows["fkl -"], rows["sft -"]
    assert "| **27.00 ± 2.20** |" in speckd and "| +2.00 [+1.12, +2.88] † |" in speckd  # Δ never bold
    assert "| +0.00 [" in jsd and SIGNIFICANT not in jsd and SIGNIFICANT not in sft
    assert "| -2.00 (no interval: n=1 vs 3) |" in rows["speckd k=3"]
    assert "| baseline |" in fkl and "| 25.00 ± 2.00 |" in fkl
    assert "| 0/3 |" in fkl and "| 100 |" in fkl  # only metric columns are bold
    bold = [c for line in rows.values() for c in line.strip("| ").split(" | ") if c.startswith("**")]
    assert bold == ["**27.00 ± 2.20**"]  # the best rougeL among the methods; nothing else
    assert "| *raw student* |" in rows["*raw student*"] and "| *5.00* |" in rows["*init student*"]


@pytest.fixture
def rouge_lower_is_better():
    """rougeL registered as a lower-is-better metric (as a plugin may declare its own), then restored."""
    original = METRICS.get("rougeL")
    register_metric(
        "rougeL", original.description, original.per_example, original.corpus, original.raw, Better.LOWER
    )
    yield
    METRICS.register("rougeL", original, replace=True)


def test_the_direction_a_metric_declares_orders_and_marks_the_table(board, rouge_lower_is_better):
    means = [r["mean"] for r in _rows(board) if _is_main(r)]
    assert means == sorted(means)  # lowest first
    md = _table(board, "--format", "md").stdout
    assert "| rougeL ↓ (mean ± std) |" in md
    rows = _md_rows(md, "jsd")
    bold = [c for line in rows.values() for c in line.strip("| ").split(" | ") if c.startswith("**")]
    assert bold == ["**23.00 ± 0.00**"]  # speckd k=3, the lowest rougeL


def test_csv_parses(board):
    text = _table(board, "--format", "csv", "--baseline", "fkl").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(_all_rows(board))
    assert [r["method"] for r in rows if r["kind"] == "reference"][:2] == ["raw student", "init student"]
    fkl = next(r for r in rows if r["method"] == "fkl" and r["n_seeds"] == "3")
    assert float(fkl["rougeL_mean"]) == pytest.approx(25.0) and float(fkl["rougeL_std"]) == pytest.approx(2.0)
    speckd = next(r for r in rows if r["method"] == "speckd" and r["n_seeds"] == "3")
    assert (
        float(speckd["rougeL_delta"]) == pytest.approx(2.0) and speckd["rougeL_delta_significant"] == "True"
    )


def test_latex_has_booktabs_and_the_right_number_of_columns(board):
    tex = _table(board, "--format", "latex", "--baseline", "fkl").stdout
    tabulars = re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, re.S)
    assert len(tabulars) == 4
    for spec, body in tabulars:
        assert "\\toprule" in body and "\\midrule" in body and "\\bottomrule" in body
        lines = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert len(lines) >= 2
        for line in lines:
            cells = re.split(r"(?<!\\)&", line)
            assert len(cells) == len(spec), line
    assert "$\\pm$" in tex and "$^\\dagger$" in tex and "\\textbf{" in tex


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.rows[-1].append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"


def test_html_parses_with_balanced_tags(board):
    parser = _Tables()
    parser.feed(_table(board, "--format", "html", "--baseline", "fkl").stdout)
    assert not parser.open
    headers = [r for r in parser.rows if r and r[0] == "th"]
    assert len(headers) == 4
    assert len(parser.rows) == len(headers) + len(_all_rows(board))


def test_rich_output_prints_every_method(board):
    text = _table(board).stdout
    for method in ("fkl", "speckd", "jsd", "sft", "rkl"):
        assert method in text
    wide = runner.invoke(app, ["table", "--results-dir", str(board), "--baseline", "fkl"], terminal_width=250)
    assert "Δ rougeL vs fkl [seed t-CI, Holm]" in wide.stdout  # brackets in a header are text, not markup


def test_filters(board):
    only = _rows(board, "--method", "speckd", "--baseline", "fkl")
    assert {r["method"] for r in only} == {"speckd"}
    assert _main(only, "speckd", **{"method.k": 5})["delta"]["rougeL"]["diff"] == pytest.approx(2.0)
    assert {r["teacher"] for r in _rows(board, "--teacher", "other-teacher")} == {"other-teacher"}
    recent = _rows(board, "--since", "2026-01-01")
    assert "other-teacher" not in {r["teacher"] for r in recent} and len(recent) == len(_rows(board)) - 1
    assert _rows(board, "--task", "gsm8k") == []
    assert len(_rows(board, "--task", "dolly")) == len(_rows(board))
    assert _rows(board, "--student", "layers:2") == []
    assert _rows(board, "--method", "fkl", "--method", "jsd", "--since", "2026-01-01T00:00")
    both = {r["method"] for r in _rows(board, "--method", "fkl", "--method", "jsd")}
    assert both == {"fkl", "jsd"}


def test_sort(board):
    def main_labels(*args):
        return [r["label"] for r in _rows(board, *args) if _is_main(r)]

    assert main_labels("--sort", "method") == sorted(main_labels())
    means = [r["mean"] for r in _rows(board) if _is_main(r)]
    assert means == sorted(means, reverse=True)
    walls = [r["train_tokens_per_s"] for r in _rows(board, "--sort", "tok_s") if _is_main(r)]
    assert walls == sorted(walls, reverse=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "--since 'last week' is not a date"),
        (["--metric", "blue"], "--metric 'blue' is in no record"),
        (["--sort", "speed"], "--sort 'speed' is not one of"),
        (["--format", "tex"], "--format 'tex' is not one of"),
        (["--columns", "x"], "--columns 'x' is not a column group; groups: core, fidelity, text, intervals"),
    ],
)
def test_bad_options_are_one_line_errors(board, monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["speckd-bench", "table", "--results-dir", str(board), *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_report_writes_the_results_readme(board, tmp_path):
    readme = tmp_path / "README.md"
    res = runner.invoke(
        app,
        ["report", "--results-dir", str(board), "--out", str(readme), "--command", "make leaderboard"],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    text = readme.read_text()
    assert "`make leaderboard`" in text
    assert "speckd (k=5) scores 27.00 ± 2.20 (n=3) against fkl's 25.00 ± 2.00 (n=3)" in text
    assert "+2.00 with a 98.3% paired t-interval over training seeds of [+1.12, +2.88]" in text
    assert "Holm-corrected p of 0.00995: significant at this scale" in text
    assert "| *init student* |" in text
    assert "2 CPU cores" in text and "Wall time:" in text
    assert "| speckd | k=5 |" in text
    details = text.split("## Details")[1]  # after the compact table, a table per group with data
    assert text.index("## Table") < text.index("## Details") < text.index("## Plots")
    for group in ("intervals", "stability", "timing"):
        assert f"**dolly, {group}**\n\n| method | settings |" in details
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (readme.parent / link).is_file(), link


INIT_A, INIT_B = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"
TEACHER = {"rougeL": 40.0, "tf_fkl": 0.0, "tf_top1": 100.0}
CONSTANT = "The answer depends on the context of the question."
FLOORS = {
    "empty": ("", {"rougeL": 0.0}),
    "constant": (CONSTANT, {"rougeL": 26.0}),
    "echo_instruction": ("prompt", {"rougeL": 8.0}),
}
EMPTY = {"empty": 0.83, "distinct_1": 0.5, "distinct_2": 0.7, "repetition": 0.0}


@pytest.fixture(scope="module")
def new_board(tmp_path_factory):
    """Records with every new field. Init A: fkl, speckd (fkl + 1.8/2.0/2.2, tf_fkl lower), sft (83% empty
    outputs), rkl (seeds 1, 2 only, fkl + 20); init B: fkl alone, below the constant floor."""
    out = tmp_path_factory.mktemp("new_board")
    common = {"losses": [1.0] * 13, "teacher": TEACHER, "floors": FLOORS}
    for seed in (1, 2, 3):
        fkl = {"tf_fkl": [0.5 + 0.1 * seed] * 4, "tf_top1": [60.0 + seed] * 4}
        speckd = {"tf_fkl": [0.3 + 0.05 * seed] * 4, "tf_top1": [70.0] * 4}
        healthy = {"degeneracy": HEALTHY}
        write_run(out, method="fkl", seed=seed, scores={10: _fkl_scores(seed)}, init_key=INIT_A,
                  fidelity=fkl, **healthy, **common)  # fmt: skip
        write_run(out, method="speckd", seed=seed, scores={10: _speckd_scores(seed)}, init_key=INIT_A,
                  fidelity=speckd, **healthy, **common)  # fmt: skip
        write_run(out, method="sft", seed=seed, scores={10: [1.0 + seed] * 4}, init_key=INIT_A,
                  fidelity=fkl, degeneracy=EMPTY, **common)  # fmt: skip
        write_run(out, method="fkl", seed=seed, scores={10: _fkl_scores(seed)}, init_key=INIT_B,
                  init_steps=80, init_final_loss=0.9, fidelity=fkl, **healthy, **common)  # fmt: skip
    for seed in (1, 2):
        scores = {10: [s + 20.0 for s in _fkl_scores(seed)]}
        fidelity = {"tf_fkl": [0.8] * 4, "tf_top1": [63.0] * 4}
        write_run(
            out,
            method="rkl",
            seed=seed,
            scores=scores,
            init_key=INIT_A,
            fidelity=fidelity,
            **healthy,
            **common,
        )
    return out


def _sections(md: str) -> list[str]:
    return md.split("**dolly**:")[1:]


def test_runs_from_different_inits_are_never_pooled(new_board):
    rows = _rows(new_board)
    fkl = [r for r in rows if r["method"] == "fkl"]
    assert sorted(r["n_seeds"] for r in fkl) == [3, 3] and len({r["protocol"] for r in fkl}) == 2
    descriptions = [s.splitlines()[0] for s in _sections(_table(new_board, "--format", "md").stdout)]
    assert len(descriptions) == 2
    a = next(d for d in descriptions if "init a1a1a1a1:" in d)
    b = next(d for d in descriptions if "init b2b2b2b2:" in d)
    assert "40 SFT steps on 200 rows, lr 0.0001, final loss 1.500" in a and f'where init="{INIT_A}"' in a
    assert "80 SFT steps on 200 rows, lr 0.0001, final loss 0.900" in b and f'where init="{INIT_B}"' in b


def test_reference_rows_hold_the_recorded_values(new_board):
    refs = [r for r in _all_rows(new_board) if r["kind"] == "reference" and "init a1" in r["protocol"]]
    assert [r["label"] for r in refs] == [
        "teacher",
        "raw student",
        "init student",
        "floor: empty",
        "floor: constant 'The answer depends on the c...'",
        "floor: echo instruction",
    ]
    by_label = {r["label"]: r for r in refs}
    assert by_label["teacher"]["metrics"]["tf_fkl"]["mean"] == 0.0
    assert by_label["teacher"]["metrics"]["tf_top1"]["mean"] == 100.0
    assert by_label["floor: empty"]["metrics"]["tf_fkl"]["mean"] is None  # not recorded for floors
    assert [r["metrics"]["rougeL"]["mean"] for r in refs] == [40.0, 1.0, 5.0, 0.0, 26.0, 8.0]
    assert all(r["n_runs"] == 11 for r in refs)
    assert by_label["floor: empty"]["degenerate"] == ["100% empty", "distinct-2 0.00"]
    md = _table(new_board, "--format", "md", "--baseline", "fkl").stdout
    section = next(s for s in _sections(md) if "init a1" in s)
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert lines[0].startswith("| *teacher* |  | *40.00* | ")  # before the methods, italic, no n or Δ
    assert lines[4].startswith("| *floor: constant 'The answer depends on the c...'* |")
    assert "best method rkl (rougeL 44.00) beats every floor (best floor: floor: constant" in section
    other = next(s for s in _sections(md) if "init b2" in s)
    assert "best method fkl (rougeL 25.00) does not beat floor: floor: constant" in other


def test_degenerate_outputs_are_flagged(new_board):
    sft = next(r for r in _rows(new_board) if r["method"] == "sft")
    assert sft["degeneracy"] == pytest.approx(EMPTY) and sft["degenerate"] == ["83% empty"]
    md = _md_rows(_table(new_board, "--format", "md", "--columns", "degeneracy").stdout, "sft")
    assert "| 83 | 0.70 | 0.00 | ⚠ degenerate: 83% empty |" in md["sft 3"]
    assert "| 0 | 0.90 | 0.05 | - |" in md["fkl 3"]


@pytest.mark.slow
def test_fidelity_columns_and_their_direction(new_board):
    md = _table(new_board, "--format", "md", "--baseline", "fkl", "--columns", "fidelity").stdout
    header = next(line for line in _sections(md)[0].splitlines() if line.startswith("| method"))
    # markdown escapes names: tf\_fkl renders as tf_fkl
    assert "| rougeL (mean ± std) |" in header and "| tf\\_fkl ↓ (mean ± std) |" in header
    assert "| tf\\_top1 (mean ± std) |" in header and "Δ tf\\_fkl vs fkl [seed t-CI, Holm]" in header
    rows = _md_rows(md, "sft")
    assert "| **0.400 ± 0.050** |" in rows["speckd 3"]  # lowest tf_fkl is best (3 decimals)
    speckd = next(r for r in _rows(new_board, "--baseline", "fkl") if r["method"] == "speckd")
    # tf_fkl diffs (0.35-0.6, 0.40-0.7, 0.45-0.8) = (-0.25, -0.30, -0.35): mean -0.30, sd 0.05
    assert speckd["delta"]["tf_fkl"]["diff"] == pytest.approx(-0.30)
    assert speckd["delta"]["tf_fkl"]["significant"] and speckd["prompt_bootstrap"]["tf_fkl"] is not None
    ordered = [r["method"] for r in _rows(new_board, "--metric", "tf_fkl") if "init a1" in r["protocol"]]
    assert ordered == ["speckd", "fkl", "sft", "rkl"]  # tf_fkl 0.40, 0.70, 0.70, 0.80
    means = [r["mean"] for r in _rows(new_board, "--metric", "tf_fkl") if "init a1" in r["protocol"]]
    assert means == sorted(means)


def test_two_seeds_are_never_marked(new_board):
    rkl = next(r for r in _rows(new_board, "--baseline", "fkl") if r["method"] == "rkl")["delta"]["rougeL"]
    assert rkl["n"] == 2 and not rkl["paired"] and rkl["p_holm"] < 0.05 and not rkl["significant"]


@pytest.mark.parametrize("fmt", ["rich", "md", "csv", "latex", "html", "json"])
def test_every_format_renders_the_new_fields(new_board, fmt):
    text = _table(new_board, "--format", fmt, "--baseline", "fkl").stdout
    assert "floor" in text and "teacher" in text
    assert "degenerate" in text


@pytest.mark.slow
def test_report_states_whether_the_best_method_beats_the_floors(new_board, tmp_path):
    readme = tmp_path / "README.md"
    res = runner.invoke(app, ["report", "--results-dir", str(new_board), "--out", str(readme)])
    assert res.exit_code == 0, (res.output, res.exception)
    text = readme.read_text()
    assert "| *teacher* |" in text and "| *floor: empty* |" in text
    assert "- best method rkl (rougeL 44.00) beats every floor" in text
    assert "- best method fkl (rougeL 25.00) does not beat floor: floor: constant" in text


def test_report_judges_each_method_against_its_init_and_places_the_notes(tmp_path):
    """fkl from an init scoring 5.0: per-seed gains 18, 20, 22 -> mean +20, sd 2, 95% t-interval
    20 ± 4.303 * 2 / sqrt(3) = [15.03, 24.97] (one method: no Holm adjustment)."""
    for seed in (1, 2, 3):
        write_run(tmp_path, method="fkl", seed=seed, scores={10: _fkl_scores(seed)}, losses=[1.0] * 13)
    notes = tmp_path / "NOTES.md"
    notes.write_text("## What this shows\n\nA hand-written reading.\n")
    readme = tmp_path / "README.md"
    args = ["report", "--results-dir", str(tmp_path), "--out", str(readme), "--notes", str(notes)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    text = readme.read_text()
    assert "| fkl | 3 | +20.00 | [+15.03, +24.97] (95.0%) |" in text and "| significant |" in text
    assert text.index("A hand-written reading.") < text.index("## Regenerate")
