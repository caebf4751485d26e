"""lm-evaluation-harness in-process on a tiny model: our exported tasks, a local multiple-choice task,
agreement with our own evaluation, the exported YAML files, and the record of a run."""

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.errors import RunInterrupted, UserError
from speckd_bench.evaluation.evaluate import build_eval_examples, evaluate_sets, load_eval_sets
from speckd_bench.evaluation.lmeval import check_lm_eval, expand_names, export_tasks, run_lm_eval
from speckd_bench.models.loading import load_teacher

runner = CliRunner()


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """lm-eval reads its JSON tasks through datasets: keep that cache out of the user's home."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer, _ = load_teacher("tiny-random")
    tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@pytest.fixture
def mc_dir(tmp_path):
    """A local lm-eval multiple-choice task (the kind lm-eval users write), for --lm-eval-include."""
    folder = tmp_path / "lmeval-tasks"
    folder.mkdir()
    rows = [
        {"question": "2 + 2 =", "choices": ["3", "4", "5"], "label": 1},
        {"question": "The sky is", "choices": ["blue", "green"], "label": 0},
        {"question": "Ice is", "choices": ["hot", "cold"], "label": 1},
    ]
    (folder / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "task": "tiny_mc",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(folder / "mc.jsonl")}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / "tiny_mc.yaml").write_text(yaml.safe_dump(task))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("chat_template", "max_prompt_length"), [(False, 160), (True, 40)])
def test_lm_eval_scores_our_task_exactly_as_our_evaluation_does(
    tiny, synthetic_data, chat_template, max_prompt_length, capfd
):
    model, tokenizer = tiny
    discover_tasks()
    cfg = RunConfig()
    cfg.data.data_dir, cfg.data.max_eval_examples = str(synthetic_data), 6
    cfg.data.chat_template, cfg.data.max_prompt_length = chat_template, max_prompt_length
    cfg.eval.max_new_tokens, cfg.eval.batch_size = 8, 1
    cfg.lm_eval.tasks, cfg.lm_eval.batch_size = ["speckd_dolly"], 1
    sets, _ = load_eval_sets("dolly", "", cfg.data)
    build_eval_examples(sets, tokenizer, cfg.data)
    ours = evaluate_sets(model, tokenizer, sets, cfg.eval, "eval", quiet=True)["dolly"]
    assert any(ex.prompt_cut for ex in sets[0].examples) == (max_prompt_length < 160)
    capfd.readouterr()
    theirs = run_lm_eval(model, tokenizer, cfg, quiet=False)
    assert theirs["results"]["speckd_dolly"]["rougeL,none"] == pytest.approx(ours.metrics["rougeL"])
    out, err = capfd.readouterr()  # not a terminal: lm-eval's bars leave no redraws or control codes
    assert "\r" not in out + err and "\x1b" not in out + err
    assert theirs["n_samples"]["speckd_dolly"]["effective"] == 6


def _lm_eval_prompt_ids(folder, name, tokenizer, model, chat_template: bool) -> list[list[int]]:
    """The prompt tokens lm-eval's HF model reads for the exported task `name`, built by lm-eval itself."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    task = TaskManager(include_path=str(folder), include_defaults=False).load([name])["tasks"][name]
    task.build_all_requests(apply_chat_template=chat_template, chat_template=lm.apply_chat_template)
    contexts = [inst.args[0] for inst in sorted(task.instances, key=lambda inst: inst.doc_id)]
    return [lm.tok_batch_encode([text])[0][0].tolist() for text in contexts]


@pytest.mark.parametrize("chat_template", [True, False])
def test_exported_prompts_are_the_harness_prompts_cut_alike(tiny, synthetic_data, tmp_path, chat_template):
    from speckd_bench.config.run_config import DataConfig

    model, tokenizer = tiny
    discover_tasks()
    data = DataConfig(data_dir=str(synthetic_data), max_eval_examples=6, max_prompt_length=40)
    data.chat_template = chat_template
    sets, _ = load_eval_sets("dolly", "", data)
    build_eval_examples(sets, tokenizer, data)
    examples = sets[0].examples
    assert any(ex.prompt_cut for ex in examples) and not all(ex.prompt_cut for ex in examples)
    export_tasks([sets[0].task], tmp_path, data, max_rows=6, tokenizer=tokenizer)
    docs = [json.loads(line) for line in (tmp_path / "speckd_dolly.jsonl").read_text().splitlines()]
    assert [doc["prompt"] for doc in docs] == [ex.prompt for ex in examples]
    theirs = _lm_eval_prompt_ids(tmp_path, "speckd_dolly", tokenizer, model, chat_template)
    assert theirs == [ex.prompt_ids for ex in examples]
    assert all(len(ids) <= data.max_prompt_length for ids in theirs)


def test_exported_tasks_load_in_lm_eval_with_our_scoring(tmp_path, synthetic_data):
    from lm_eval.tasks import TaskManager

    from speckd_bench.config.run_config import DataConfig

    discover_tasks()
    tasks = [discover_tasks().get(n) for n in ("dolly", "gsm8k")]
    gsm = tmp_path / "mirror"
    (gsm / "gsm8k").mkdir(parents=True)
    (gsm / "gsm8k" / "test.jsonl").write_text(
        json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n"
    )
    (gsm / "dolly").symlink_to(synthetic_data / "dolly")
    out = tmp_path / "export"
    exported = export_tasks(tasks, out, DataConfig(data_dir=str(gsm)))
    assert [name for name, _ in exported] == ["speckd_dolly", "speckd_gsm8k"]
    config = (out / "speckd_gsm8k.yaml").read_text()
    assert "process_results: !function 'speckd_scoring.gsm8k'" in config and "max_gen_toks: 256" in config
    doc = json.loads((out / "speckd_gsm8k.jsonl").read_text())
    assert doc["references"] == ["2"] and doc["prompt"].endswith("1+1?\n\n### Response:\n")
    manager = TaskManager(include_path=str(out), include_defaults=False)
    assert {"speckd_dolly", "speckd_gsm8k"} <= set(manager.all_tasks)
    scoring = manager.load(["speckd_gsm8k"])["tasks"]["speckd_gsm8k"].config.process_results
    assert scoring({"references": ["2"]}, [" so the answer is 2."]) == {"accuracy": 100.0}


@pytest.mark.parametrize(("preset", "chat"), [("tiny", False), ("default", True)])
def test_cli_export_prints_the_lm_eval_command_of_the_preset(tmp_path, data_dir, preset, chat):
    args = ["tasks", "export-lmeval", str(tmp_path), "--task", "dolly", "--data-dir", str(data_dir)]
    res = runner.invoke(app, [*args, "--max-rows", "3", "--preset", preset])
    assert res.exit_code == 0, res.output
    assert "speckd_dolly: 3 rows" in res.stdout
    command = shlex.split(res.stdout.split("run: ", 1)[1])
    assert command[:5] == ["lm-eval", "--model", "hf", "--model_args", "pretrained=MODEL,dtype=float32"]
    assert command[command.index("--include_path") + 1] == str(tmp_path)
    assert command[command.index("--tasks") + 1] == "speckd_dolly"
    assert ("--apply_chat_template" in command) == chat
    docs = [json.loads(line) for line in (tmp_path / "speckd_dolly.jsonl").read_text().splitlines()]
    assert len(docs) == 3 and all("### Instruction:" in d["prompt"] for d in docs) != chat
    budget = "max_gen_toks: 8" if preset == "tiny" else "max_gen_toks: 64"
    assert budget in (tmp_path / "speckd_dolly.yaml").read_text()


def _two_task_run(results, data_dir, mc_dir) -> list[str]:
    """A tiny sft run scored by lm-eval on our dolly task and the local multiple-choice one."""
    return [
        "run", "--preset", "tiny", "--method", "sft", "--data-dir", str(data_dir),
        "--results-dir", str(results), "--max-train-examples", "8", "--max-eval-examples", "3",
        "--set", "train.init_sft_epochs=0", "--set", "eval.eval_before=false",
        "--lm-eval", "speckd_dolly,tiny_mc", "--lm-eval-include", str(mc_dir), "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_run_stores_lm_eval_results_for_generation_and_multiple_choice(tmp_path, data_dir, mc_dir):
    res = runner.invoke(app, _two_task_run(tmp_path, data_dir, mc_dir))
    assert res.exit_code == 0, (res.output, res.exception)
    record = json.loads((tmp_path / "runs").glob("*/record.json").__next__().read_text())
    lm = record["lm_eval"]
    assert lm["tasks"] == ["speckd_dolly", "tiny_mc"] and lm["limit"] == 3
    assert 0.0 <= lm["results"]["tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= lm["results"]["speckd_dolly"]["rougeL,none"] <= 100.0
    assert lm["n_samples"]["tiny_mc"]["effective"] == 3 and lm["lm_eval_version"]
    assert lm["configs"]["tiny_mc"]["output_type"] == "multiple_choice"
    assert lm["configs"]["speckd_dolly"]["generation_kwargs"]["max_gen_toks"] == 8
    assert set(lm["versions"]) >= {"speckd_dolly", "tiny_mc"} and lm["versions"]["speckd_dolly"] == 1.0


@pytest.mark.slow
def test_interrupted_lm_eval_resumes_with_the_tasks_it_finished(tmp_path, data_dir, mc_dir, monkeypatch):
    """Ctrl-C while lm-eval scores the second task: the run is recorded 'interrupted' with its resume
    command, the first task's scores are kept, and the resumed run scores only the second."""
    import lm_eval

    real, calls = lm_eval.simple_evaluate, []

    def second_task_interrupted(*args, **kwargs):
        calls.append(kwargs["tasks"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", second_task_interrupted)
    res = runner.invoke(app, _two_task_run(tmp_path, data_dir, mc_dir))
    assert isinstance(res.exception, RunInterrupted), (res.output, res.exception)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "record.json").read_text())["status"] == "interrupted"
    kept = json.loads((run_dir / "state.json").read_text())["lm_eval_done"]
    assert list(kept) == ["speckd_dolly"]

    command = str(res.exception).split("continue it with: ")[1]
    res = runner.invoke(app, [*shlex.split(command)[1:], "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert calls == [["speckd_dolly"], ["tiny_mc"], ["tiny_mc"]]
    lm = json.loads((run_dir / "record.json").read_text())["lm_eval"]
    assert lm["tasks"] == ["speckd_dolly", "tiny_mc"]
    assert lm["results"]["speckd_dolly"] == kept["speckd_dolly"]["results"]["speckd_dolly"]
    assert 0.0 <= lm["results"]["tiny_mc"]["acc,none"] <= 1.0 and lm["n_samples"]["tiny_mc"]["effective"] == 3


def test_lm_eval_names_are_checked(tmp_path):
    discover_tasks()
    assert expand_names(["@task", "speckd_gsm8k", "gsm8k"], "gsm8k") == ["gsm8k", "speckd_gsm8k"]
    with pytest.raises(UserError, match="task dolly lists no lm-eval tasks"):
        expand_names(["@task"], "dolly")
    res = runner.invoke(
        app, ["run", "--preset", "tiny", "--lm-eval", "@task", "--results-dir", str(tmp_path)]
    )
    assert isinstance(res.exception, UserError)


def test_unknown_lm_eval_task_fails_before_any_model_loads(tmp_path, data_dir, monkeypatch, capsys):
    from conftest import assert_one_line_error, cli

    import speckd_bench.engine.recipe as recipe

    def no_models(*_args, **_kwargs):
        raise AssertionError("models loaded before the lm-eval tasks were checked")

    monkeypatch.setattr(recipe, "load_pair", no_models)
    args = ["run", "--preset", "tiny", "--data-dir", data_dir, "--results-dir", tmp_path / "results"]
    code, err = cli(monkeypatch, capsys, [*args, "--lm-eval", "speckd_dolly,speckd_dolyl"])
    assert_one_line_error(code, err, "unknown lm-eval task 'speckd_dolyl' (did you mean speckd_dolly")
    assert not list(tmp_path.glob("results/runs/*"))
    missing = tmp_path / "no"
    code, err = cli(monkeypatch, capsys, [*args, "--lm-eval", "tiny_mc", "--lm-eval-include", missing])
    assert_one_line_error(code, err, f"lm_eval.include: {missing} is not a folder")


def test_our_tasks_and_included_ones_resolve_without_indexing_lm_evals_own(mc_dir, monkeypatch):
    import lm_eval.tasks

    discover_tasks()
    real = lm_eval.tasks.TaskManager

    def local_only(*args, include_defaults=True, **kwargs):
        assert not include_defaults, "lm-eval's own tasks were indexed"
        return real(*args, include_defaults=include_defaults, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", local_only)
    cfg = RunConfig()
    cfg.task, cfg.lm_eval.tasks, cfg.lm_eval.include = "dolly", ["speckd_dolly", "tiny_mc"], [str(mc_dir)]
    assert check_lm_eval(cfg) == ["speckd_dolly", "tiny_mc"]


@pytest.mark.slow
def test_lm_evals_own_names_are_indexed_once_and_suggested():
    import lm_eval.tasks

    discover_tasks()
    cfg = RunConfig()
    cfg.lm_eval.tasks = ["hellaswg"]
    with pytest.raises(UserError, match=r"unknown lm-eval task 'hellaswg' \(did you mean hellaswag"):
        check_lm_eval(cfg)
    cfg.lm_eval.tasks = ["hellaswag", "speckd_dolly"]
    real, lm_eval.tasks.TaskManager = lm_eval.tasks.TaskManager, None  # the index comes from the cache
    try:
        assert check_lm_eval(cfg) == ["hellaswag", "speckd_dolly"]
    finally:
        lm_eval.tasks.TaskManager = real


@pytest.mark.slow
def test_a_failing_lm_eval_keeps_the_run_and_says_how_to_score_it_again(tmp_path, data_dir, monkeypatch):
    import speckd_bench.engine.scoring as scoring

    real = scoring.run_lm_eval

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(scoring, "run_lm_eval", out_of_memory)
    args = [
        "run", "--preset", "tiny", "--method", "sft", "--data-dir", str(data_dir),
        "--results-dir", str(tmp_path), "--max-train-examples", "8", "--max-eval-examples", "3",
        "--set", "train.init_sft_epochs=0", "--set", "eval.eval_before=false",
        "--lm-eval", "speckd_dolly", "--quiet",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    run_dir = Path(res.stdout.strip()).parent
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete" and "after" in record["metrics"]["dolly"]
    assert record["lm_eval"] == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert (run_dir / "checkpoint" / "config.json").is_file()
    warning = next(line for line in res.stderr.splitlines() if "lm-eval failed" in line)
    command = warning.split("run them with: ")[1]
    assert command.startswith(f"speckd-bench eval --run {run_dir.name} ")

    monkeypatch.setattr(scoring, "run_lm_eval", real)
    res = runner.invoke(app, [*shlex.split(command)[1:], "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    again = json.loads(Path(res.stdout.strip()).read_text())
    assert again["run_id"] == run_dir.name and again["lm_eval"]["tasks"] == ["speckd_dolly"]
    assert 0.0 <= again["lm_eval"]["results"]["speckd_dolly"]["rougeL,none"] <= 100.0
