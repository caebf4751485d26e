"""Data parallelism: 2 processes (gloo, launched through accelerate) x batch 2 follow the loss trajectory of
1 process x batch 4, write one record, and gather the evaluation in prompt order; FSDP2 teacher sharding
gives the same trajectory; launch errors are one line; padded Qwen-style output layers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_errors import WORDS, assert_one_line_error, cli, run_dirs, word_tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.config.run_config import ModelConfig
from speckd_bench.models.loading import load_pair

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def run_args(method: str, results: Path, data_dir: Path, batch: int, *extra: str) -> list[str]:
    return [
        "run", "--preset", "tiny", "--method", method, "--data-dir", str(data_dir),
        "--results-dir", str(results), "--set", f"train.batch_size={batch}",
        "--set", f"train.max_steps={STEPS}", "--set", "eval.eval_before=false", "--quiet", *extra,
    ]  # fmt: skip


def only_run(results: Path) -> tuple[dict, list[dict], list[dict]]:
    (run_dir,) = run_dirs(results)
    record = json.loads((run_dir / "record.json").read_text())
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return record, log, samples


@pytest.mark.parametrize(("method", "fsdp"), [("fkl", False), ("speckd", True)])
def test_two_processes_of_batch_two_follow_one_process_of_batch_four(
    method, fsdp, tmp_path, data_dir, fresh_cache, monkeypatch
):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["--set", f"train.fsdp={str(fsdp).lower()}"]
    # Each run builds its own init (SFT) checkpoint: the distributed warm start is compared too.
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("one")))
    res = CliRunner().invoke(app, run_args(method, one, data_dir, 4, *extra))
    assert res.exit_code == 0, (res.output, res.exception)
    env = {**os.environ, "SPECKD_CACHE_DIR": str(fresh_cache("two")), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "speckd_bench", *run_args(method, two, data_dir, 2, *extra)]
    launch += ["--launcher", "accelerate", "--num-processes", "2"]
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("record.json") == 1  # only the main process prints its record's path

    rec1, log1, samples1 = only_run(one)
    rec2, log2, samples2 = only_run(two)  # one run directory, one record
    assert (rec1["num_processes"], rec1["global_batch"]) == (1, 4)
    assert (rec2["num_processes"], rec2["global_batch"]) == (2, 4)
    assert rec2["teacher_sharding"] == ("fsdp2" if fsdp else "replicated")
    assert rec2["training"]["steps"] == STEPS and len(log2) == STEPS
    assert [r["target_tokens"] for r in log2] == [r["target_tokens"] for r in log1]
    for a, b in zip(log1, log2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["tar"] == a["tar"]
    assert rec2["init"]["training"]["final_loss"] == pytest.approx(rec1["init"]["training"]["final_loss"])
    # The sharded evaluation is gathered back into the prompts' order.
    assert [s["index"] for s in samples2] == list(range(len(samples1)))
    assert [s["prompt"] for s in samples2] == [s["prompt"] for s in samples1]
    assert [s["output"] for s in samples2] == [s["output"] for s in samples1]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--launcher", "accelerate", "--num-processes", "0"], "--num-processes 0 must be >= 1"),
        (
            ["--launcher", "mpi", "--num-processes", "2"],
            "--launcher 'mpi' is not one of 'none', 'accelerate'",
        ),
        (["--num-processes", "2"], "--num-processes needs --launcher accelerate"),
    ],
)
def test_bad_launch_options_are_one_line_errors(flags, fragment, tmp_path, monkeypatch, capsys):
    args = ["run", "--preset", "tiny", "--results-dir", tmp_path, *flags]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, fragment)
    assert run_dirs(tmp_path) == []


def qwen_dir(path: Path, rows: int) -> Path:
    """A tiny Qwen2 whose output layer has `rows` rows, saved with a 40-token tokenizer."""
    config = Qwen2Config(
        vocab_size=rows, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, pad_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(path)
    word_tokenizer(WORDS).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("teacher_rows", "student_rows", "vocab", "note"),
    [
        (48, 48, 48, None),  # Qwen2.5 0.5B / 1.5B: 151936 rows each, tokenizer 151665: nothing to cut
        (56, 48, 48, "output layers differ (56 vs 48 rows): cut to 48"),  # 7B (152064) -> 0.5B
    ],
)
def test_qwen_output_rows_padded_beyond_the_tokenizer(tmp_path, teacher_rows, student_rows, vocab, note):
    teacher = qwen_dir(tmp_path / "teacher", teacher_rows)
    student = qwen_dir(tmp_path / "student", student_rows)
    pair = load_pair(ModelConfig(str(teacher), str(student), "float32"), torch.device("cpu"))
    assert len(pair.tokenizer) == len(WORDS) + 3 < pair.vocab_size == vocab
    assert pair.info.get("vocab_note") == note
