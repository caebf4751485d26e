"""Bad input: one line on stderr naming what is wrong and how to fix it, exit code 2, no traceback, and
no run folder left half written. (Unknown task and method names: test_cli_e2e; value types and the
function-level checks: test_config and test_data.)"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, cli
from safetensors.torch import load_file
from tiny_models import tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import speckd_bench.engine.run_state
import speckd_bench.engine.trainer
from speckd_bench.caches import cache_dir
from speckd_bench.cli.app import main
from speckd_bench.config.run_config import build_config
from speckd_bench.engine.run_state import CHECKPOINTS, RunState
from speckd_bench.methods.discovery import method_config
from speckd_bench.models.loading import smollm2_dir

TINY = ["run", "--preset", "tiny", "--quiet"]
DOLLY_TASK = (Path(__file__).resolve().parents[1] / "tasks" / "dolly.yaml").read_text()


def run_dirs(results: Path) -> list[Path]:
    return list((results / "runs").glob("*")) if (results / "runs").is_dir() else []


def mirror(root: Path, train_text: str) -> Path:
    (root / "dolly").mkdir(parents=True)
    (root / "dolly" / "dev.jsonl").write_text(train_text)
    row = {"instruction": "Say hi.", "input": "", "output": "hi"}
    (root / "dolly" / "valid.jsonl").write_text(json.dumps(row) + "\n")
    return root


GOOD_ROW = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}) + "\n"


def case_unknown_preset(tmp: Path) -> tuple[list, tuple]:
    return ["run", "--preset", "tiy"], ("unknown preset 'tiy' (did you mean tiny?)",)


def case_unknown_metric(tmp: Path) -> tuple[list, tuple]:
    (tmp / "plugins").mkdir()
    task = DOLLY_TASK.replace("name: dolly", "name: dolly2").replace("[rougeL]", "[rougeLL]")
    (tmp / "plugins" / "dolly2.yaml").write_text(task)
    args = [*TINY, "--task", "dolly2", "--plugins", tmp / "plugins"]
    return args, ("dolly2.yaml: key 'metrics' names unknown metric 'rougeLL' (did you mean rougeL",)


def case_malformed_task_plugin(tmp: Path) -> tuple[list, tuple]:
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "bad.yaml").write_text("name: bad\nkind: instruction\nsplits: {eval: [x\n")
    return ["tasks", "--plugins", tmp / "plugins"], ("bad.yaml:4: malformed YAML",)


def case_malformed_run_config(tmp: Path) -> tuple[list, tuple]:
    (tmp / "run.yaml").write_text("method:\n  k: 3\n  rule: [topk\n")
    return [*TINY, "--config", tmp / "run.yaml"], ("run.yaml:4: malformed YAML",)


def case_unknown_key_in_yaml(tmp: Path) -> tuple[list, tuple]:
    (tmp / "run.yaml").write_text("train:\n  lrr: 0.1\n")
    return [*TINY, "--config", tmp / "run.yaml"], (
        "unknown config key 'train.lrr' in",
        "did you mean train.lr",
    )


def set_case(key_value: str, *fragments: str):
    return lambda tmp: ([*TINY, "--set", key_value], fragments)


def case_missing_mirror_no_hub(tmp: Path) -> tuple[list, tuple]:
    (tmp / "empty").mkdir()
    args = [*TINY, "--data-dir", tmp / "empty"]
    return args, ("MiniLLM/dolly:raw.jsonl could not be loaded", "dolly/dev.jsonl not found", "--data-dir")


def case_row_not_json(tmp: Path) -> tuple[list, tuple]:
    root = mirror(tmp / "m", GOOD_ROW + "{not json\n")
    return [*TINY, "--data-dir", root], ("dev.jsonl:2: not valid JSON",)


def case_row_missing_field(tmp: Path) -> tuple[list, tuple]:
    root = mirror(tmp / "m", GOOD_ROW + json.dumps({"instruction": "x", "input": ""}) + "\n")
    return [*TINY, "--data-dir", root], ("dev.jsonl:2: row lacks field 'output'",)


def case_empty_dataset(tmp: Path) -> tuple[list, tuple]:
    root = mirror(tmp / "m", "\n\n")
    return [*TINY, "--data-dir", root], ("dolly/dev.jsonl) has no rows",)


def case_results_dir_not_writable(tmp: Path) -> tuple[list, tuple]:
    (tmp / "a-file").write_text("")  # mkdir under a regular file fails even for root
    return [*TINY, "--results-dir", tmp / "a-file" / "results"], ("cannot be created", "--results-dir")


def case_resume_with_two_seeds(tmp: Path) -> tuple[list, tuple]:
    return ["run", "--resume", "last", "--seed", "1", "--seed", "2"], ("at most one --seed",)


CASES = {
    "unknown preset": case_unknown_preset,
    "unknown metric": case_unknown_metric,
    "malformed task plugin": case_malformed_task_plugin,
    "malformed run config": case_malformed_run_config,
    "unknown key in a YAML config": case_unknown_key_in_yaml,
    "k < 1": set_case("method.k=0", "method.k=0 is out of range", "k >= 1"),
    "gate wider than the teacher cache": lambda tmp: (
        [*TINY, "--method", "speckd", "--set", "method.k=100", "--set", "train.teacher_cache=true"],
        ("method.k=100 is larger than train.teacher_cache_k=64", "--set train.teacher_cache=false"),
    ),
    "beta > 1": set_case("method.beta=1.5", "beta in [0, 1]"),
    "negative lr": set_case("train.lr=-0.1", "lr > 0"),
    "zero batch size": set_case("train.batch_size=0", "batch_size >= 1"),
    "max length within the prompt budget": set_case(
        "data.max_length=64", "must exceed data.max_prompt_length"
    ),
    "negative checkpoint interval": set_case("train.checkpoint_every=-1", "checkpoint_every >= 0"),
    "keep no checkpoint": set_case("train.keep_checkpoints=0", "keep_checkpoints >= 1"),
    "missing mirror file and no hub": case_missing_mirror_no_hub,
    "row that is not JSON": case_row_not_json,
    "row without a required field": case_row_missing_field,
    "empty dataset": case_empty_dataset,
    "results dir not writable": case_results_dir_not_writable,
    "resume with two seeds": case_resume_with_two_seeds,
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_writes_no_run(case, tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.chdir(tmp_path)  # the default results dir, if anything gets that far
    args, fragments = case(tmp_path)
    if "--data-dir" not in args and args[0] == "run":
        args += ["--data-dir", data_dir]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, *fragments)
    assert run_dirs(tmp_path / "results") == []


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )


def model_dir(path: Path, tokenizer: PreTrainedTokenizerFast, output_rows: int) -> Path:
    """A tiny Llama with `output_rows` rows in its embedding and output layer, saved with its tokenizer."""
    ids = {"pad_token_id": 1, "bos_token_id": None, "eos_token_id": 2}
    tiny_llama(0, vocab_size=output_rows, **ids).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


WORDS = ["the", "a", "number", "after", "is", "name", "that", "follows", "response", "instruction"]
WORDS += [f"w{i}" for i in range(27)]  # 3 special + 37 words = 40 tokens


def test_teacher_and_student_with_different_tokenizers(tmp_path, monkeypatch, capsys, data_dir):
    teacher = model_dir(tmp_path / "teacher", word_tokenizer(WORDS), 40)
    student = model_dir(tmp_path / "student", word_tokenizer([w.upper() for w in WORDS]), 40)
    args = [*TINY, "--teacher", teacher, "--student", student, "--data-dir", data_dir]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", tmp_path / "results"])
    assert_one_line_error(code, err, f"teacher {teacher}", f"student {student}", "different tokenizers")
    assert run_dirs(tmp_path / "results") == []


@pytest.mark.slow
def test_padded_output_rows_are_cut_to_the_shared_vocabulary_with_a_note(
    tmp_path, monkeypatch, capsys, data_dir
):
    """Same tokenizer, teacher output layer padded to 48 rows (as Qwen2.5 7B vs 0.5B): a normal run."""
    tokenizer = word_tokenizer(WORDS)
    teacher = model_dir(tmp_path / "teacher", tokenizer, 48)
    student = model_dir(tmp_path / "student", tokenizer, 40)
    args = [*TINY, "--method", "fkl", "--teacher", teacher, "--student", student, "--data-dir", data_dir]
    args += ["--set", "train.max_steps=2", "--set", "train.init_sft_epochs=0", "--results-dir", tmp_path]
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *map(str, args)])
    main()
    (record_path,) = (tmp_path / "runs").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete"
    assert record["models"]["vocab_note"] == "output layers differ (48 vs 40 rows): cut to 40"
    assert math.isfinite(record["training"]["final_loss"])


def fabricated_run(results: Path, **settings: str):
    """An unfinished run folder as `run` leaves it before training: resolved config, empty state."""
    cfg = build_config(
        method_config=method_config,
        method="fkl",
        preset="tiny",
        overrides={"results_dir": str(results), **settings},
    )
    return cfg, RunState.create(results / "runs" / "20260101-000000-dolly-fkl-s1-abcdef", cfg)


def test_resume_with_other_settings_names_them(tmp_path, monkeypatch, capsys):
    _, state = fabricated_run(tmp_path)
    args = ["run", "--resume", state.dir.name, "--results-dir", tmp_path, "--set", "train.lr=0.5"]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(
        code, err, f"run {state.dir.name} was started with other settings", "train.lr 0.001 -> 0.5"
    )
    # Where files go and how often to checkpoint may change on resume.
    assert (
        speckd_bench.engine.run_state.resume_config(state.dir, {"train.checkpoint_every": "5"}).train.lr
        == 0.001
    )


def test_resume_from_a_checkpoint_of_another_config(tmp_path, monkeypatch, capsys, data_dir):
    _, state = fabricated_run(tmp_path)
    other, _ = fabricated_run(tmp_path / "other", **{"train.lr": "0.002"})
    foreign = state.dir / CHECKPOINTS / "step-000002"
    foreign.mkdir(parents=True)
    (foreign / "state.json").write_text(json.dumps({"progress": {"step": 2}, "config": other.to_dict()}))
    before = sorted(p.name for p in state.dir.iterdir())
    code, err = cli(
        monkeypatch, capsys, ["run", "--resume", "last", "--results-dir", tmp_path, "--data-dir", data_dir]
    )
    assert_one_line_error(
        code, err, f"checkpoint {foreign} was written with other settings", "train.lr 0.002 -> 0.001"
    )
    assert sorted(p.name for p in state.dir.iterdir()) == before  # the failed resume wrote nothing


@pytest.mark.slow
def test_a_diverged_warm_start_is_an_error_and_is_not_cached(tmp_path, monkeypatch, capsys, data_dir):
    real = speckd_bench.engine.trainer.micro_batch_loss

    def nan_in_sft(student, teacher, micro, mcfg, *args):
        out = real(student, teacher, micro, mcfg, *args)
        if mcfg.name == "sft":
            out.loss_sum = out.loss_sum * float("nan")
        return out

    smollm2_dir()
    capsys.readouterr()
    monkeypatch.setattr(speckd_bench.engine.trainer, "micro_batch_loss", nan_in_sft)
    lr = ["--set", "train.init_lr=0.0123"]  # a warm start no other test builds
    args = [*TINY, "--method", "fkl", *lr, "--data-dir", data_dir, "--results-dir", tmp_path]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, "SFT warm start diverged", "step 1", "train.init_sft_epochs=0")
    built = [json.loads(m.read_text()) for m in (cache_dir() / "init").glob("*/meta.json")]
    assert not [b for b in built if b["identity"]["plan"]["lr"] == 0.0123]


@pytest.mark.slow
def test_nan_loss_stops_training_keeps_the_last_good_weights_and_records_diverged(
    tmp_path, monkeypatch, capsys, data_dir
):
    real = speckd_bench.engine.trainer.micro_batch_loss
    calls = []

    def nan_at_step_3(student, teacher, micro, mcfg, *args):
        out = real(student, teacher, micro, mcfg, *args)
        calls.append(mcfg.name)  # the fkl steps, not the SFT warm start's
        if calls.count("fkl") == 3 and mcfg.name == "fkl":
            out.loss_sum = out.loss_sum * float("nan")
        return out

    smollm2_dir()  # converted beforehand: the one-time conversion bar is not part of the error output
    capsys.readouterr()
    monkeypatch.setattr(speckd_bench.engine.trainer, "micro_batch_loss", nan_at_step_3)
    monkeypatch.setattr(speckd_bench.engine.run_state.Checkpoints, "remove", lambda self: None)
    args = [*TINY, "--method", "fkl", "--set", "train.max_steps=5", "--set", "train.checkpoint_every=1"]
    code, err = cli(monkeypatch, capsys, [*args, "--data-dir", data_dir, "--results-dir", tmp_path])
    assert_one_line_error(
        code,
        err,
        "diverged: non-finite loss at training step 3",
        "last good weights (step 2)",
        "lower train.lr",
    )

    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete"
    assert record["training"]["diverged"] and record["training"]["diverged_at_step"] == 3
    assert record["training"]["steps"] == 2
    assert "after" in record["metrics"]["dolly"]
    final = load_file(run_dir / "checkpoint" / "model.safetensors")
    last_good = load_file(run_dir / CHECKPOINTS / "step-000002" / "student.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())
    common = final.keys() & last_good.keys()  # tied embeddings are stored under one of their names
    assert len(common) >= len(last_good) - 1
    assert all(torch.equal(final[name], last_good[name]) for name in common)
    assert [p.name for p in (run_dir / CHECKPOINTS).iterdir()] == ["step-000002"]
