"""The summary a finished run prints (engine/summary.py) and the main metric it leads with."""

from pathlib import Path

import pytest

from speckd_bench.engine.recipe import build_run_config
from speckd_bench.engine.summary import check_main_metric, main_metric, print_summary, summary_lines
from speckd_bench.errors import UserError

HEALTHY = {"empty": 0.0, "distinct_1": 0.6, "distinct_2": 0.8, "repetition": 0.05}
BEFORE = {
    "dolly": {
        "raw": {"metrics": {"rougeL": 3.0, "tf_tvd": 0.61}},
        "init": {"metrics": {"rougeL": 12.5, "tf_tvd": 0.42}},
    }
}


def _after(degeneracy: dict[str, float], **metrics: float) -> dict:
    return {"dolly": {"metrics": {"rougeL": 14.25, "tf_tvd": 0.384, **metrics}, "degeneracy": degeneracy}}


def _lines(main: str, after: dict, lm_eval: dict | None = None) -> list[str]:
    return summary_lines([("dolly", ["rougeL"])], main, BEFORE, after, lm_eval, 61.4, Path("r/record.json"))


def test_the_summary_leads_with_the_main_metric_and_its_direction_then_the_tasks_own():
    lines = _lines("tf_tvd", _after(HEALTHY))
    assert lines == [
        "dolly tf_tvd: raw 0.6100 -> init 0.4200 -> after 0.3840 (lower is better)",
        "dolly rougeL: raw 3.00 -> init 12.50 -> after 14.25 (higher is better)",
        "61 s, record: r/record.json",
    ]


def test_the_tasks_metric_is_shown_once_when_it_is_the_main_metric():
    assert _lines("rougeL", _after(HEALTHY))[:-1] == [
        "dolly rougeL: raw 3.00 -> init 12.50 -> after 14.25 (higher is better)"
    ]


def test_a_main_metric_the_eval_set_did_not_score_falls_back_to_its_tasks_first():
    after = {"dolly": {"metrics": {"rougeL": 14.25}, "degeneracy": HEALTHY}}
    assert _lines("tf_tvd", after)[0].startswith("dolly rougeL: raw 3.00")


def test_lm_eval_scores_follow_without_their_stderr():
    lm_eval = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.4512, "acc_stderr,none": 0.01}}}
    assert _lines("rougeL", _after(HEALTHY), lm_eval)[1] == "lm-eval arc_easy: acc 0.451"


def test_degenerate_outputs_are_said_plainly():
    looping = {"empty": 0.0, "distinct_1": 0.01, "distinct_2": 0.0, "repetition": 0.94}
    lines = _lines("tf_tvd", _after(looping))
    assert lines[2] == (
        "warning: the trained student's outputs on dolly are degenerate (distinct-2 0.00, repetition 0.94): "
        "its text metrics measure noise"
    )
    assert not any("warning" in line for line in _lines("tf_tvd", _after(HEALTHY)))


def test_quiet_sends_the_summary_to_stderr(capsys):
    print_summary(["a line"], quiet=True)
    out, err = capsys.readouterr()
    assert out == "" and err == "a line\n"
    print_summary(["a line"], quiet=False)
    assert capsys.readouterr().out == "a line\n"


def test_the_main_metric_defaults_to_the_tasks_first():
    assert main_metric("", ["rougeL", "bleu"]) == "rougeL"
    assert main_metric("tf_tvd", ["rougeL"]) == "tf_tvd"
    assert build_run_config().eval.main_metric == ""


def test_a_main_metric_the_run_does_not_compute_is_one_line_naming_the_valid_ones():
    assert check_main_metric("tf_tvd", "dolly", ["rougeL"], fidelity=True) == "tf_tvd"
    with pytest.raises(
        UserError,
        match=r"'tf_tdv' is not computed by a run of task dolly \(did you mean tf_tvd.*valid: rougeL, tf_fkl",
    ):
        check_main_metric("tf_tdv", "dolly", ["rougeL"], fidelity=True)
    with pytest.raises(UserError, match="valid: rougeL .*need eval.reference=true"):
        check_main_metric("tf_tvd", "dolly", ["rougeL"], fidelity=False)


def test_an_unknown_main_metric_fails_when_the_config_is_built():
    with pytest.raises(UserError, match=r"eval.main_metric='tf_tdv' .* tf_fkl, tf_rkl, tf_tvd"):
        build_run_config(overrides={"eval.main_metric": "tf_tdv"})
    assert build_run_config(overrides={"eval.main_metric": "tf_tvd"}).eval.main_metric == "tf_tvd"
