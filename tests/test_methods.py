"""Every registered method end to end through the CLI (tiny preset, one seed, few rows), plus the SpecKD
gate on a baseline and seqkd's cache across runs.
"""

import json

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.methods import rollout
from speckd_bench.methods.discovery import discover_methods

runner = CliRunner()
# Short rollouts; distillm starts half off-policy and validates every step so its schedule runs.
EXTRA = {
    "gkd": ["method.gen_max_new_tokens=8"],
    "skd": ["method.gen_max_new_tokens=8"],
    "seqkd": ["method.gen_max_new_tokens=8"],
    "distillm": ["method.gen_max_new_tokens=8", "method.replay_init_prob=0.5", "method.replay_eval_every=1"],
}
GATED = "fkl+speckd"
IN_CLI_E2E = {"sft", "fkl", "speckd"}  # run there with two seeds each


def run(out, data_dir, method, seed=1, sets=()):
    args = ["run", "--preset", "tiny", "--method", method, "--seed", str(seed), "--data-dir", str(data_dir)]
    args += ["--results-dir", str(out), "--max-train-examples", "8", "--max-eval-examples", "4", "--quiet"]
    for item in ["eval.eval_before=false", "eval.max_new_tokens=4", *sets]:
        args += ["--set", item]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(open(res.stdout.strip().splitlines()[-1]).read())


@pytest.fixture(scope="module")
def records(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("methods")
    names = [name for name in discover_methods() if name not in IN_CLI_E2E]
    found = {name: run(out, data_dir, name, sets=EXTRA.get(name, ())) for name in names}
    found[GATED] = run(out, data_dir, "fkl", sets=["method.gate=speckd", "method.k=20"])
    return out, found


def log_of(out, record):
    path = out / "runs" / record["run_id"] / record["paths"]["train_log"]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_every_method_trains_and_records(records):
    out, found = records
    assert {"seqkd", "gkd", "skd", "distillm", "kd", "rkl", "jsd", "tvd", "sfkl", "srkl", "akl"} <= set(found)
    for name, record in found.items():
        assert record["status"] == "complete", name
        assert record["training"]["steps"] == 2 and not record["training"]["diverged"]
        assert set(record["seeds"]) >= {"train", "data_order", "gate", "policy", "eval"}
        assert all(row["loss"] is not None for row in log_of(out, record))


@pytest.mark.slow
def test_policy_facts_are_logged_and_recorded(records):
    out, found = records
    assert all("on_policy" in row for row in log_of(out, found["gkd"]))
    skd = found["skd"]["policy"]
    per_step = [row["replaced"] for row in log_of(out, found["skd"])]
    assert skd["replaced_fraction"] == skd["replaced"] / skd["proposals"]
    assert min(per_step) <= skd["replaced_fraction"] <= max(per_step)  # the steps' weighted mean
    distillm = found["distillm"]
    probs = [row["replay_prob"] for row in log_of(out, distillm)]
    (_, first), (_, second) = distillm["policy"]["val_losses"]
    risen = second >= first + 0.1  # replay_loss_eps: the probability rises by 0.1 after step 1's check
    assert probs == [0.5, pytest.approx(0.6 if risen else 0.5)]
    assert [step for step, _ in distillm["policy"]["val_losses"]] == [0, 1]
    assert sum(distillm["policy"]["micro_batches"].values()) == 2
    assert found["seqkd"]["policy"]["reused"] is False
    assert found["seqkd"]["method_info"]["data_policy"] == "teacher_generated"


@pytest.mark.slow
def test_gate_on_a_baseline_records_the_tar_series(records):
    _, found = records
    gated = found[GATED]
    training = gated["training"]
    assert gated["config"]["method"]["gate"] == "speckd" and gated["method"] == "fkl"
    assert len(training["tar_series"]) == training["steps"]
    assert training["tar_first"] == training["tar_series"][0]
    assert training["tar_last"] == training["tar_series"][-1]
    assert training["tar_mean"] == pytest.approx(sum(training["tar_series"]) / training["steps"])
    assert "tar_mean" not in found["kd"]["training"]


@pytest.mark.slow
def test_seqkd_second_run_reuses_the_teacher_responses(records, data_dir, monkeypatch):
    out, found = records

    def no_generation(*args, **kwargs):
        raise AssertionError("the teacher generated although its responses are cached")

    monkeypatch.setattr(rollout, "sample_responses", no_generation)
    second = run(out, data_dir, "seqkd", seed=2, sets=EXTRA["seqkd"])
    assert second["policy"]["reused"] is True
    assert second["policy"]["cache"] == found["seqkd"]["policy"]["cache"]


def test_methods_listing_shows_every_method_with_its_paper():
    listing = runner.invoke(app, ["methods"]).stdout
    for name, method in discover_methods().items():
        assert name in listing
        assert method.paper.split()[0] in listing
