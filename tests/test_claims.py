"""The README's findings (publish/claims.py) state exactly the training-seed statistics of the records:
checked against scipy's t-tests and Holm's correction computed here, on fixture records."""

import re

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from synthetic_records import write_run

from speckd_bench.errors import UserError
from speckd_bench.leaderboard.selection import select_sections
from speckd_bench.publish.claims import (
    findings,
    gate_question,
    gate_question_elsewhere,
    gate_stability,
    metric_ranking,
    ordering,
    stability,
)

SEEDS = (1, 2, 3)
FKL = {1: 0.29, 2: 0.30, 3: 0.31}
OFFSETS = {  # tf_tvd of each method minus fkl's, per seed (lower is better)
    "rkl": (-0.022, -0.020, -0.018),
    "sft": (0.06, 0.04, 0.05),
    "srkl": (-0.025, -0.035, -0.03),
    "speckd": (-0.006, -0.012, -0.012),
}
CONTROL_OFFSETS = {"random": (0.006, 0.004, 0.005), "confidence": (0.02, -0.01, 0.0)}
"""tf_tvd of a control gate minus speckd's, per seed."""


def _tvd(method: str, seed: int, control: str | None = None) -> float:
    value = FKL[seed] + (OFFSETS[method][seed - 1] if method != "fkl" else 0.0)
    return value + (CONTROL_OFFSETS[control][seed - 1] if control else 0.0)


def _write(out, method: str, seed: int, control: str | None = None, match: bool = True, **kwargs) -> None:
    settings = {"method.gate": control, "method.gate_match": match} if control else {}
    value = _tvd(method, seed, control)
    write_run(
        out,
        method=method,
        seed=seed,
        scores={10: [10.0 + seed] * 4},
        losses=[1.0] * 11 + [3.0 if method == "sft" and seed == 1 else 1.0, 0.5],
        fidelity={"tf_tvd": [value - 0.01, value + 0.01, value, value]},
        settings=settings,
        **kwargs,
    )


def _board(out, controls=("random", "confidence"), match: bool = True):
    for seed in SEEDS:
        for method in ("fkl", *OFFSETS):
            _write(out, method, seed)
        for control in controls:
            _write(out, "speckd", seed, control, match)
    (section,) = select_sections(out, baseline="fkl", metrics=["tf_tvd", "rougeL"])
    return section


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    return _board(tmp_path_factory.mktemp("claims"))


def _values(method: str, control: str | None = None) -> np.ndarray:
    return np.array([_tvd(method, s, control) for s in SEEDS])


SENTENCE = re.compile(
    r"by (?P<d>[+-][\d.]+) \[(?P<low>[+-][\d.]+), (?P<high>[+-][\d.]+)\] against (?P<against>.+?) "
    r"\(Holm p (?P<p>[\d.e-]+), (?P<verdict>significant|not significant)\)"
)


def _parsed(text: str, against: str) -> dict:
    match = next(m for m in SENTENCE.finditer(text) if m["against"] == against)
    return {k: match[k] if k in ("against", "verdict") else float(match[k]) for k in SENTENCE.groupindex}


def _check(claim: dict, a: np.ndarray, b: np.ndarray, p_holm: float) -> None:
    """The claim states mean(a - b), an interval around it, and the given Holm p with its verdict."""
    assert claim["d"] == pytest.approx(float(np.mean(a - b)), abs=6e-4)
    assert claim["low"] < claim["d"] < claim["high"]
    assert claim["p"] == pytest.approx(p_holm, rel=0.05)
    assert claim["verdict"] == ("significant" if p_holm < 0.05 else "not significant")


def test_every_method_against_the_baseline_states_the_paired_t_test_holm_corrected(section):
    text = "\n".join(findings([section], "speckd"))
    assert "training-seed statistic" in text
    compared = {
        "rkl": _values("rkl"),
        "sft": _values("sft"),
        "srkl": _values("srkl"),
        r"speckd (gate=speckd, gate\_match=False)": _values("speckd"),
        r"speckd (gate=random, gate\_match=True)": _values("speckd", "random"),
        r"speckd (gate=confidence, gate\_match=True)": _values("speckd", "confidence"),
    }
    p = [stats.ttest_rel(v, _values("fkl")).pvalue for v in compared.values()]
    holm = dict(zip(compared, multipletests(p, method="holm")[1], strict=True))
    for label, values in compared.items():
        line = next(x for x in text.splitlines() if x.startswith(f"- {label} changes tf\\_tvd by "))
        _check(_parsed(line, "fkl"), values, _values("fkl"), holm[label])
    assert "- rkl changes tf\\_tvd by -0.020 [" in text  # three decimals at this scale


def test_the_gate_question_names_both_controls_at_the_same_acceptance_rate(section):
    (line,) = gate_question(section, "speckd")
    speckd = _values("speckd")
    controls = {
        name: _values("speckd", gate)
        for gate, name in (("random", "a random gate"), ("confidence", "a teacher-confidence gate"))
    }
    p = [stats.ttest_rel(speckd, v).pvalue for v in controls.values()]
    holm = dict(zip(controls, multipletests(p, method="holm")[1], strict=True))
    for name, values in controls.items():
        _check(_parsed(line, name), speckd, values, holm[name])
    assert line.startswith("The SpecKD gate (speckd (gate=speckd, gate\\_match=False)) changes tf\\_tvd by ")
    assert line.endswith("at the same acceptance rate.") and "not run yet" not in line.lower()
    assert _parsed(line, "fkl")["d"] == pytest.approx(float(np.mean(speckd - _values("fkl"))), abs=6e-4)


def test_a_missing_control_is_not_run_yet(tmp_path):
    line = gate_question(_board(tmp_path, controls=("random",)), "speckd")[0]
    assert "against a random gate (Holm p" in line
    assert line.endswith("Not run yet at the same acceptance rate: a teacher-confidence gate.")


def test_a_control_at_another_acceptance_rate_does_not_count(tmp_path):
    line = gate_question(_board(tmp_path, controls=("random",), match=False), "speckd")[0]
    assert "against a random gate (" not in line
    assert line.endswith(
        "Not run yet at the same acceptance rate: a random gate and a teacher-confidence gate."
    )


TOP1_OFFSETS = {"fkl": (0.0, 0.0, 0.0), "speckd": (-0.3, -0.35, -0.25), "random": (-0.2, -0.42, -0.22),
                "confidence": (-0.1, -0.25, -0.1)}  # fmt: skip
"""tf_top1 of each arm minus fkl's (40 + seed / 10), per seed: the gate loses top-1 where it wins tf_tvd."""


def _top1(arm: str, seed: int) -> float:
    return 40.0 + seed / 10 + TOP1_OFFSETS[arm][seed - 1]


def test_the_gate_question_is_asked_again_on_the_other_fidelity_metrics(tmp_path):
    for seed in SEEDS:
        for arm in TOP1_OFFSETS:
            method, control = ("fkl", None) if arm == "fkl" else ("speckd", None if arm == "speckd" else arm)
            value, top1 = _tvd(method, seed, control), _top1(arm, seed)
            settings = {"method.gate": control, "method.gate_match": True} if control else {}
            fidelity = {"tf_tvd": [value] * 4, "tf_top1": [top1 - 1, top1 + 1, top1, top1]}
            write_run(tmp_path, method=method, seed=seed, scores={10: [10.0] * 4}, losses=[1.0],
                      fidelity=fidelity, settings=settings)  # fmt: skip
    (section,) = select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd", "tf_top1", "rougeL"])
    line, sides = gate_question_elsewhere(section, "speckd")
    assert line.startswith(
        "On tf\\_top1 (higher is better): The SpecKD gate (speckd (gate=speckd, gate\\_match=False)) "
        "changes tf\\_top1 by "
    )
    top1 = {arm: np.array([_top1(arm, s) for s in SEEDS]) for arm in TOP1_OFFSETS}
    controls = {"random": "a random gate", "confidence": "a teacher-confidence gate"}
    p = [stats.ttest_rel(top1["speckd"], top1[arm]).pvalue for arm in controls]
    holm = dict(zip(controls, multipletests(p, method="holm")[1], strict=True))
    for arm, name in controls.items():
        _check(_parsed(line, name), top1["speckd"], top1[arm], holm[arm])
    assert _parsed(line, "fkl")["d"] == pytest.approx(-0.3, abs=6e-4)
    text = "\n".join(findings([section], "speckd"))
    assert "**The same question on the other fidelity metrics** (" in text and line in text
    assert "On tf\\_tvd" not in text and "On rougeL" not in text
    # against fkl: tf_tvd -0.010 (Holm p 0.11 over the three gates), tf_top1 -0.30 (Holm p 0.027)
    assert sides == (
        "Against fkl, the SpecKD gate (speckd (gate=speckd, gate\\_match=False)) is better on tf\\_tvd "
        "(not significant) and worse on tf\\_top1."
    )


def test_without_speckd_runs_the_gate_question_says_so(tmp_path):
    for seed in SEEDS:
        _write(tmp_path, "fkl", seed)
        _write(tmp_path, "rkl", seed)
    (section,) = select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd"])
    assert gate_question(section, "speckd") == ["The gate question: no speckd runs with its own gate yet."]
    assert ordering(section) == [
        "The published ordering sft < fkl < srkl on tf\\_tvd: cannot be checked, no runs of sft, srkl."
    ]


def test_the_published_ordering_is_checked_with_the_direction_of_the_metric(section):
    (line,) = ordering(section)
    assert line.startswith("The published ordering sft < fkl < srkl on tf\\_tvd: the table agrees")
    assert "fkl changes it by -0.050 [" in line and "against sft (Holm p" in line
    assert "srkl changes it by -0.030 [" in line
    (reversed_line,) = ordering(section, ("srkl", "fkl", "sft"))
    assert "the table does not agree" in reversed_line


def test_stability_states_seed_spread_spikes_and_grad_norms(section):
    (line,) = stability(section)
    spreads = {g.label: float(np.std([_tvd_of(g, s) for s in SEEDS], ddof=1)) for g in section.groups}
    low, high = min(spreads, key=spreads.get), max(spreads, key=spreads.get)
    assert f"of tf\\_tvd ranges from {spreads[low]:.3f} ({low.replace('_', chr(92) + '_')})" in line
    assert f"to {spreads[high]:.3f}" in line
    assert "loss spikes per run: sft 0.33, none for the others" in line  # one spike over three runs
    assert "the grad-norm coefficient of variation is 0.00 for every method; no run diverged." in line


SWING = {"fkl": 0.6, "speckd": 0.3, "random": 0.58, "confidence": 0.4}
"""How far each arm's gradient norm swings around 1 (seed s adds 0.02 s): its grad-norm CV grows with it."""


def _grad_norms(arm: str, seed: int) -> list[float]:
    swing = SWING[arm] + 0.02 * seed + (0.01 if arm == "random" and seed == 2 else 0.0)
    return [1.0 + swing * (-1) ** i for i in range(13)]


def test_the_gate_stability_compares_grad_norm_variation_with_the_baseline_and_both_controls(tmp_path):
    for seed in SEEDS:
        _write(tmp_path, "fkl", seed, grad_norms=_grad_norms("fkl", seed))
        _write(tmp_path, "speckd", seed, grad_norms=_grad_norms("speckd", seed))
        for control in ("random", "confidence"):
            _write(tmp_path, "speckd", seed, control, grad_norms=_grad_norms(control, seed))
    (section,) = select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd"])
    (line,) = gate_stability(section, "speckd")
    cv = {arm: np.array([stats.variation(_grad_norms(arm, s)) for s in SEEDS]) for arm in SWING}
    against = {"fkl": "fkl", "random": "a random gate", "confidence": "a teacher-confidence gate"}
    p = [stats.ttest_rel(cv["speckd"], cv[arm]).pvalue for arm in against]
    holm = dict(zip(against, multipletests(p, method="holm")[1], strict=True))
    assert line.startswith(
        "The SpecKD gate (speckd (gate=speckd, gate\\_match=False)) changes the grad-norm coefficient of "
        "variation by "
    )
    for arm, name in against.items():
        _check(_parsed(line, name), cv["speckd"], cv[arm], holm[arm])
    spread = {m: np.std([_tvd(m, s) for s in SEEDS], ddof=1) for m in ("speckd", "fkl")}
    assert line.endswith(
        f"at the same acceptance rate. Its seed std of tf\\_tvd is {spread['speckd']:.3f} (n=3) against "
        f"fkl's {spread['fkl']:.3f} (n=3), not tested."
    )
    assert line in "\n".join(findings([section], "speckd"))


def _tvd_of(group, seed: int) -> float:
    run = next(r for r in group.runs if r.seed == seed)
    return run.after_metric(group.eval_set, "tf_tvd")


def test_a_main_metric_older_records_lack_is_named_and_the_next_one_judged(tmp_path):
    for seed in SEEDS:
        for method in ("fkl", "rkl"):
            write_run(tmp_path, method=method, seed=seed, scores={10: [10.0 + seed] * 4}, losses=[1.0])
    (section,) = select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd", "rougeL"])
    assert section.metrics == ["rougeL"] and section.missing == ["tf_tvd"]
    text = "\n".join(findings([section], "speckd"))
    assert "Judged on rougeL (higher is better). Asked for but in none of these records: tf\\_tvd" in text
    with pytest.raises(UserError, match="--metric 'rougeX' is in no record"):
        select_sections(tmp_path, baseline="fkl", metrics=["rougeX", "rougeL"])
    with pytest.raises(UserError, match="--metric 'tf_tvd' is in no record"):
        select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd"])


def test_the_metric_ranking_orders_the_divergence_families_best_first(section, tmp_path):
    # tf_tvd means over seeds: srkl 0.27, rkl 0.28, fkl 0.30, sft 0.35 (lower is better)
    (line,) = metric_ranking(section)
    assert (
        line
        == "tf_tvd (lower is better) ranks, best first: srkl (mode-seeking), rkl (mode-seeking), fkl, sft."
    )
    for seed in SEEDS:
        _write(tmp_path, "fkl", seed)
        _write(tmp_path, "sft", seed)
    (only_covering,) = select_sections(tmp_path, baseline="fkl", metrics=["tf_tvd"])
    assert metric_ranking(only_covering)[0].startswith("Not measured here")
