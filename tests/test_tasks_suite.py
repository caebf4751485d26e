"""--eval-suite: train on one task, score every set of the suite with every eval seed, keep per-seed
metrics with their mean and std; `eval --eval-suite` scores a run's checkpoint the same way."""

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app

pytestmark = pytest.mark.slow  # every test trains a tiny run first

runner = CliRunner()

SUITE = """\
suite: pair
description: dolly and a second set over the same rows (a test suite)
sets: [dolly, dolly_again]
decoding: minillm
"""
AGAIN = """\
name: dolly_again
kind: instruction
description: the dolly eval rows under another name and prompt
splits:
  eval: {mirror: dolly/valid.jsonl}
prompt:
  template: "Instruction: {instruction}\\nResponse: "
reference: output
metrics: [rougeL, exact_match]
"""


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, synthetic_data):
    plugins = tmp_path_factory.mktemp("suite-plugins")
    (plugins / "pair.yaml").write_text(SUITE)
    (plugins / "dolly_again.yaml").write_text(AGAIN)
    results = tmp_path_factory.mktemp("results")
    common = ["--plugins", str(plugins), "--data-dir", str(synthetic_data), "--results-dir", str(results)]
    args = [
        "run", "--task", "dolly", "--method", "sft", "--preset", "tiny", "--eval-suite", "pair",
        "--max-eval-examples", "3", "--set", "eval.seeds=[10,20]", "--quiet", *common,
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(Path(res.stdout.strip()).read_text()), common


def test_every_set_is_scored_with_every_eval_seed(suite_run):
    record, _ = suite_run
    assert list(record["metrics"]) == ["dolly", "dolly_again"]
    assert (
        record["config"]["eval"]["decoding"] == "sample"
        and record["config"]["eval"]["no_repeat_ngram_size"] == 6
    )
    assert record["seeds"]["eval"] == [10, 20]
    for name, metrics in (("dolly", {"rougeL"}), ("dolly_again", {"rougeL", "exact_match"})):
        assert {"raw", "init"} <= set(record["metrics"][name]["before"])
        after = record["metrics"][name]["after"]
        assert set(after["per_seed"]) == {"10", "20"}
        for metric in metrics:
            values = [after["per_seed"][s][metric] for s in ("10", "20")]
            assert after["metrics"][metric] == pytest.approx(statistics.fmean(values))
            assert after["std_over_eval_seeds"][metric] == pytest.approx(statistics.pstdev(values))
    assert record["data"]["eval_sets"]["dolly_again"]["n_eval"] == 3


def test_samples_name_their_set_and_seed(suite_run, tmp_path):
    record, common = suite_run
    results = Path(common[common.index("--results-dir") + 1])
    samples = (results / "runs" / record["run_id"] / "samples.jsonl").read_text().splitlines()
    keys = sorted((s["eval_set"], s["eval_seed"], s["index"]) for s in map(json.loads, samples))
    assert keys == sorted(
        (n, seed, i) for n in ("dolly", "dolly_again") for seed in (10, 20) for i in range(3)
    )


def test_eval_scores_a_runs_checkpoint_on_the_suite_again(suite_run):
    record, common = suite_run
    res = runner.invoke(app, ["eval", "--run", record["run_id"], "--eval-suite", "pair", "--quiet", *common])
    assert res.exit_code == 0, (res.output, res.exception)
    again = json.loads(Path(res.stdout.strip()).read_text())
    assert again["config"]["eval"]["seeds"] == [10, 20]
    for name in ("dolly", "dolly_again"):
        assert again["metrics"][name]["per_seed"] == record["metrics"][name]["after"]["per_seed"]


def test_minillm_suite_on_the_real_mirror_skips_the_hub_only_set(real_data, tmp_path):
    args = [
        "run", "--task", "dolly", "--method", "sft", "--preset", "tiny", "--eval-suite", "minillm",
        "--data-dir", str(real_data), "--results-dir", str(tmp_path), "--max-train-examples", "4",
        "--max-eval-examples", "2", "--set", "eval.seeds=[10]", "--set", "train.init_sft_epochs=0",
        "--set", "eval.eval_before=false", "--quiet",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    record = json.loads(Path(res.stdout.strip()).read_text())
    assert list(record["metrics"]) == ["dolly", "self_inst", "vicuna", "s_ni"]
    assert "u_ni" in res.stderr and "hub-only" in record["data"]["eval_sets"]["u_ni"]["skipped"]
