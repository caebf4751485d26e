"""`power`: the paired t-test's power at the seeds run, the seeds a difference needs, on records."""

import math
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, cli
from scipy import stats
from synthetic_records import write_run

from speckd_bench.cli.app import main
from speckd_bench.leaderboard.power import (
    MAX_SEEDS,
    baseline_pairs,
    gate_pairs,
    pair_rows,
    power_at,
    seeds_needed,
)
from speckd_bench.leaderboard.selection import select_sections


def _power_by_hand(sd: float, effect: float, n: int, level: float) -> float:
    """Two-sided paired t: P(|T| > t_crit) with T noncentral t (n - 1 df, noncentrality effect/sd*sqrt n)."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    crit = stats.t.ppf(1 - level / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize(("sd", "effect", "n", "level"), [(0.3, 0.5, 3, 0.05), (0.2, 0.5, 7, 0.05 / 6)])
def test_power_matches_the_noncentral_t_by_hand(sd, effect, n, level):
    assert power_at(sd, effect, n, level) == pytest.approx(_power_by_hand(sd, effect, n, level), abs=1e-6)


@pytest.mark.parametrize(("sd", "n", "expected"), [(0.0000767, 2, 0.53), (0.000677, 3, 0.56)])
def test_power_stays_finite_when_the_spread_is_far_below_the_effect(sd, n, expected):
    """The grid's case: differences repeating to the fourth digit over two or three seeds. The noncentral t's
    functions return NaN there; the power must still be the t-test's, checked against a simulation."""
    level = 0.05 / 10
    differences = np.random.default_rng(0).normal(0.005, sd, size=(200_000, n))
    simulated = np.mean(stats.ttest_1samp(differences, 0.0, axis=1).pvalue < level)
    assert simulated == pytest.approx(expected, abs=0.01)
    assert power_at(sd, 0.005, n, level) == pytest.approx(simulated, abs=0.005)
    assert seeds_needed(sd, 0.005, level, 0.8) == n + 1  # two seeds are not enough for the first, nor three


def test_seeds_needed_is_the_first_count_reaching_the_target():
    n = seeds_needed(0.2307, 0.5, 0.05 / 6, 0.8)
    assert power_at(0.2307, 0.5, n, 0.05 / 6) >= 0.8 > power_at(0.2307, 0.5, n - 1, 0.05 / 6)
    assert seeds_needed(0.0, 0.5, 0.05, 0.8) == 2  # no spread: two seeds settle it
    assert seeds_needed(100.0, 0.001, 0.05, 0.8) == MAX_SEEDS  # out of reach


def test_power_rows_pair_seeds_with_the_baseline(tmp_path):
    base = {1: 10.0, 2: 11.0, 3: 12.0}
    gain = {1: 10.5, 2: 11.9, 3: 12.4}  # differences 0.5, 0.9, 0.4
    for seed in (1, 2, 3):
        write_run(tmp_path, method="fkl", seed=seed, scores={10: [base[seed]] * 4}, losses=[1.0] * 3)
        write_run(tmp_path, method="rkl", seed=seed, scores={10: [gain[seed]] * 4}, losses=[1.0] * 3)
    [section] = select_sections(tmp_path, baseline="fkl")
    [row] = pair_rows(baseline_pairs(section, "fkl"), "rougeL", effect=0.5)
    diffs = [0.5, 0.9, 0.4]
    assert row.method == "rkl" and row.against == "fkl" and row.n == 3
    assert row.diff == pytest.approx(np.mean(diffs)) and row.sd == pytest.approx(np.std(diffs, ddof=1))
    assert row.power == pytest.approx(_power_by_hand(row.sd, 0.5, 3, 0.05), abs=1e-6)  # one comparison
    assert row.needed == seeds_needed(row.sd, 0.5, 0.05, 0.8)


def test_the_command_prints_the_table_and_refuses_a_bad_effect(tmp_path, monkeypatch, capsys):
    for seed in (1, 2):
        write_run(tmp_path, method="fkl", seed=seed, scores={10: [1.0 + seed]}, losses=[1.0])
        write_run(tmp_path, method="sft", seed=seed, scores={10: [1.5 + seed * 1.1]}, losses=[1.0])
    args = ["speckd-bench", "power", "--effect", "0.5", "--results-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    main()
    out = capsys.readouterr().out
    assert "| sft | fkl | 2 |" in out and "power to detect |Δ| = 0.5" in out
    code, err = cli(monkeypatch, capsys, ["power", "--effect", "0", "--results-dir", str(tmp_path)])
    assert_one_line_error(code, err, "--effect 0")


def test_gates_pairs_each_rule_with_its_matched_controls_in_one_family(tmp_path, monkeypatch, capsys):
    """--gates: SpecKD against the random and confidence gates matched to it (one Holm family of two);
    fkl and a control at another acceptance rate are not in it."""
    speckd = {1: 10.0, 2: 11.0, 3: 12.0}
    controls = {"random": {1: 10.9, 2: 11.2, 3: 12.9}, "confidence": {1: 10.3, 2: 10.8, 3: 12.6}}
    for seed in (1, 2, 3):
        write_run(tmp_path, method="fkl", seed=seed, scores={10: [9.0]}, losses=[1.0])
        write_run(tmp_path, method="speckd", seed=seed, scores={10: [speckd[seed]]}, losses=[1.0])
        for gate, values in controls.items():
            matched = {"method.gate": gate, "method.gate_match": True}
            write_run(tmp_path, method="speckd", seed=seed, scores={10: [values[seed]]}, losses=[1.0],
                      settings=matched)  # fmt: skip
        unmatched = {"method.gate": "random", "method.gate_match": False}
        write_run(tmp_path, method="speckd", seed=seed, scores={10: [9.5]}, losses=[1.0], settings=unmatched)
    [section] = select_sections(tmp_path, baseline="fkl")
    rows = pair_rows(gate_pairs(section, "speckd"), "rougeL", effect=0.5)
    assert [r.against for r in rows] == [
        "speckd (gate=random, gate_match=True)",
        "speckd (gate=confidence, gate_match=True)",
    ]
    for row, values in zip(rows, controls.values(), strict=True):
        diffs = [speckd[s] - values[s] for s in (1, 2, 3)]
        assert row.n == 3 and row.diff == pytest.approx(np.mean(diffs))
        assert row.power == pytest.approx(_power_by_hand(row.sd, 0.5, 3, 0.05 / 2), abs=1e-6)
    args = ["speckd-bench", "power", "--effect", "0.5", "--gates", "--results-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    main()
    out = capsys.readouterr().out
    assert "alpha 0.05 / 2 comparisons" in out and "| fkl |" not in out
