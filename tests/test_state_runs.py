"""One run folder, one writer; and a broken cache entry is rebuilt, never trained from."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli
from typer.testing import CliRunner

from speckd_bench.cli.app import app

pytestmark = [pytest.mark.slow]
runner = CliRunner()

ARGS = ["--preset", "tiny", "--method", "fkl", "--seed", "2", "--max-eval-examples", "2", "--quiet"]


def wait_for_log(proc: subprocess.Popen, results: Path, lines: int, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for log in (results / "runs").glob("*/train_log.jsonl"):
            if log.read_text().count("\n") >= lines:
                return log.parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not log {lines} steps in {timeout} s")


@pytest.mark.subprocess
def test_a_run_being_trained_cannot_be_resumed_by_another_process(tmp_path, data_dir, monkeypatch, capsys):
    steps = 40
    args = ["run", *ARGS, "--set", f"train.max_steps={steps}", "--set", "train.checkpoint_every=2"]
    args += ["--set", "eval.eval_before=false", "--data-dir", str(data_dir), "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "speckd_bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = wait_for_log(proc, tmp_path, 2)
    code, err = cli(monkeypatch, capsys, ["run", "--resume", "last", "--results-dir", tmp_path])
    assert_one_line_error(code, err, "no unfinished run", "that no process trains (1 being trained now)")
    code, err = cli(monkeypatch, capsys, ["run", "--resume", run_dir.name, "--results-dir", tmp_path])
    assert_one_line_error(
        code, err, f"run {run_dir.name} is being trained by another process (pid {proc.pid} on "
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete" and record["training"]["steps"] == steps


@pytest.mark.subprocess
def test_resume_last_skips_the_live_run_and_takes_the_interrupted_one(
    tmp_path, data_dir, monkeypatch, capsys
):
    base = [sys.executable, "-m", "speckd_bench", "run", *ARGS, "--set", "eval.eval_before=false"]
    base += ["--set", "train.checkpoint_every=1", "--data-dir", str(data_dir), "--results-dir", str(tmp_path)]
    first = subprocess.Popen([*base, "--set", "train.max_steps=3"], stderr=subprocess.PIPE, text=True)
    stopped = wait_for_log(first, tmp_path, 1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(300) == 130
    live = subprocess.Popen([*base, "--set", "train.max_steps=40"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "runs").glob("*/train_log.jsonl"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        from speckd_bench.engine.run_state import find_run

        assert find_run(tmp_path, "last") == stopped  # the newer run is live: never picked
    finally:
        live.send_signal(signal.SIGTERM)
        live.wait(300)


def test_a_warm_start_with_random_bytes_in_its_weights_is_rebuilt(tmp_path, data_dir):
    args = ["run", *ARGS, "--set", "train.max_steps=1", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, (first.output, first.exception)
    cache = Path(os.environ["SPECKD_CACHE_DIR"])
    (entry,) = (cache / "init").iterdir()
    with open(entry / "student.safetensors", "r+b") as fh:
        fh.seek(4096)
        fh.write(os.urandom(64))
    second = runner.invoke(app, args)
    assert second.exit_code == 0, (second.output, second.exception)
    warnings = [line for line in second.stderr.splitlines() if "cache entry" in line]
    assert warnings == [
        f"warning: cache entry {entry} is broken (student.safetensors does not match its checksum "
        "(overwritten)); removed, rebuilding it"
    ]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/record.json"))]
    assert records[-1]["init"]["reused"] is False
    scores = [(r["metrics"]["dolly"]["before"]["init"], r["metrics"]["dolly"]["after"]) for r in records]
    assert [[s["metrics"] for s in pair] for pair in scores] == [[s["metrics"] for s in scores[0]]] * 2

    (entry / "train_log.jsonl").unlink()
    third = runner.invoke(app, args)
    assert third.exit_code == 0, (third.output, third.exception)
    assert "train_log.jsonl is missing" in third.stderr
    (evals,) = entry.glob("eval-init-*.json")
    evals.write_text('{"metrics": ')
    fourth = runner.invoke(app, args)
    assert fourth.exit_code == 0, (fourth.output, fourth.exception)
    assert f"cache entry {evals} is broken (eval-init-" in fourth.stderr
    assert json.loads(evals.read_text())["metrics"]  # scored again and stored
