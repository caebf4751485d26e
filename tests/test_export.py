"""`speckd-bench export`: a run's student as a plain Hugging Face folder that transformers and lm-eval load
by path and that decodes as the harness's own evaluation did."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, constants
from typer.testing import CliRunner

from speckd_bench.cli.app import app, main

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("results")
    args = ["run", "--preset", "tiny", "--method", "fkl", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(out), "--set", "train.max_steps=4", "--set", "eval.eval_before=false"]
    args += ["--lm-eval", "speckd_dolly", "--set", "lm_eval.limit=2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Path(res.stdout.strip()).parent


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model"
    res = runner.invoke(app, ["export", run_dir.name, str(out), "--results-dir", str(run_dir.parent.parent)])
    assert res.exit_code == 0, (res.output, res.exception)
    return out


@pytest.mark.slow
def test_folder_is_a_standard_model_with_a_card(exported, run_dir):
    files = {p.name for p in exported.iterdir()}
    expected = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"}
    assert expected <= files
    card = (exported / "README.md").read_text()
    record = json.loads((run_dir / "record.json").read_text())
    for text in ("library_name: transformers", record["run_id"], "tiny-random", "fkl", "## Scores"):
        assert text in card
    assert record["git_commit"] is None or record["git_commit"] in card
    assert "| fkl | 1 |" in card  # the run's leaderboard row
    generation = json.loads((exported / "generation_config.json").read_text())
    assert "max_new_tokens" not in generation  # the protocol's budget is no cap on the user's answers
    assert generation.get("do_sample", False) is False


@pytest.mark.slow
def test_card_metadata_carries_data_tags_and_every_score(exported, run_dir):
    front = (exported / "README.md").read_text().split("---\n")[1]
    meta = yaml.safe_load(front)
    record = json.loads((run_dir / "record.json").read_text())
    assert meta["datasets"] == ["MiniLLM/dolly"]  # the dolly task file's hub source
    assert {"knowledge-distillation", "fkl"} <= set(meta["tags"])
    assert "base_model" not in meta and "license" not in meta  # a random teacher: neither is known
    (index,) = meta["model-index"]
    assert index["name"] == record["run_id"]
    scores = [
        (r["dataset"]["name"], m["type"], m["value"], r.get("source", {}).get("name"))
        for r in index["results"]
        for m in r["metrics"]
    ]
    after = record["metrics"]["dolly"]["after"]["metrics"]
    assert scores[0] == ("dolly", "rougeL", after["rougeL"], None)  # the main metric first
    assert "tf_fkl" in after and all(not s[1].startswith(("tf_", "rougeL_")) for s in scores)
    lm_eval = record["lm_eval"]["results"]["speckd_dolly"]["rougeL,none"]
    assert ("lm-eval speckd_dolly", "rougeL", lm_eval, "lm-evaluation-harness") in scores
    assert ModelCard.load(exported / "README.md").data.eval_results[0].metric_value == after["rougeL"]


@pytest.mark.slow
def test_card_names_the_model_the_student_was_cut_from_and_its_license(run_dir):
    from speckd_bench.engine.eval_run import run_record
    from speckd_bench.publish.card_data import card_data

    record = run_record(run_dir)
    record.models = {**record.models, "teacher": "smollm2-135m-instruct"}
    data = card_data(record)
    assert (data.base_model, data.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")


def _index(data) -> list[tuple[str, str, float, str | None]]:
    """A card's model-index as (dataset name, metric, value, source name) rows."""
    return [(r.dataset_name, r.metric_type, r.metric_value, r.source_name) for r in data.eval_results]


@pytest.mark.slow
def test_huggingface_hub_reads_the_exported_cards_metadata_back(exported, run_dir):
    data = ModelCard.load(exported / "README.md").data
    record = json.loads((run_dir / "record.json").read_text())
    assert data.language == ["en"] and data.datasets == ["MiniLLM/dolly"]
    assert data.base_model is None and data.license is None  # a random teacher: neither is known
    after = record["metrics"]["dolly"]["after"]["metrics"]
    lm_eval = record["lm_eval"]["results"]["speckd_dolly"]["rougeL,none"]
    assert _index(data)[0] == ("dolly", "rougeL", after["rougeL"], None)
    assert ("lm-eval speckd_dolly", "rougeL", lm_eval, "lm-evaluation-harness") in _index(data)


@pytest.mark.slow
def test_a_card_with_a_known_teacher_reads_back_with_base_model_and_license(run_dir, tmp_path):
    from speckd_bench.engine.eval_run import config_of_run, run_record
    from speckd_bench.publish.hub_export import model_card

    record = run_record(run_dir)
    record.models = {**record.models, "teacher": "smollm2-135m-instruct"}
    model_card(record, run_dir, config_of_run(run_dir, {}), "model").save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.license == "apache-2.0"
    assert data.language == ["en"] and data.datasets == ["MiniLLM/dolly"]  # from the GGUF metadata
    after = record.metrics["dolly"]["after"]["metrics"]
    assert _index(data)[0] == ("dolly", "rougeL", after["rougeL"], None)


@pytest.mark.slow
def test_transformers_greedy_text_equals_the_runs_samples(exported, run_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported)
    record = json.loads((run_dir / "record.json").read_text())
    keep = record["config"]["data"]["max_prompt_length"]  # the harness keeps a prompt's last tokens
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()][:4]
    budget = record["config"]["eval"]["max_new_tokens"]
    for sample in samples:
        ids = tok(sample["prompt"], add_special_tokens=False, return_tensors="pt").input_ids[:, -keep:]
        out = model.generate(ids, max_new_tokens=budget)
        assert tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip() == sample["output"]


@pytest.mark.slow
def test_lm_eval_runs_on_the_folder_by_path(exported, data_dir, tmp_path, monkeypatch):
    import datasets
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from speckd_bench.config.run_config import DataConfig
    from speckd_bench.data.tasks import TASKS, discover_tasks
    from speckd_bench.evaluation.lmeval import export_tasks

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    discover_tasks()
    export_tasks([TASKS.get("dolly")], tmp_path, DataConfig(data_dir=str(data_dir)), 8, 2)
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={exported},dtype=float32,device=cpu",
        tasks=["speckd_dolly"],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        bootstrap_iters=0,
    )
    assert 0.0 <= out["results"]["speckd_dolly"]["rougeL,none"] <= 100.0
    assert out["n-samples"]["speckd_dolly"]["effective"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "is not empty; pass --force to replace its contents"),
        (["--force", "--push-to-hub", "nobody/none"], "--push-to-hub nobody/none: upload failed"),
    ],
)
@pytest.mark.slow
def test_refusals_are_one_line_exit_2(exported, run_dir, monkeypatch, capsys, extra, message):
    args = ["export", run_dir.name, str(exported), "--results-dir", str(run_dir.parent.parent), *extra]
    monkeypatch.setenv("HF_TOKEN", "hf_invalid")  # never a real account's
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: fails at once
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_run_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["speckd-bench", "export", "nope", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no run 'nope'" in err and err.count("\n") == 1
