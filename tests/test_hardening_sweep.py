"""A sweep stopped by SIGTERM to its pid alone (what a supervisor or `docker stop` sends) passes the stop on
to the run it started: the run checkpoints and records 'interrupted', the sweep prints its per-run line and
totals and exits 130, and the next `sweep run` resumes the run, also when the sweep was started in the
background (SIGINT ignored, as a script's `&` leaves it)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GRID = """\
name: long
preset: tiny
task: dolly
method: fkl
seed: 1
set:
  data.data_dir: {data_dir}
  data.max_eval_examples: 2
  train.max_steps: 100000
  train.checkpoint_every: 5
"""


def _training(results: Path) -> bool:
    logs = list((results / "runs").glob("*/train_log.jsonl"))
    return bool(logs) and logs[0].read_text().count("\n") >= 6


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_to_the_sweep_alone_interrupts_its_run_and_reports(tmp_path, data_dir):
    sweep_file = tmp_path / "long.yaml"
    sweep_file.write_text(GRID.format(data_dir=data_dir))
    results = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "speckd_bench",
        "sweep",
        "run",
        str(sweep_file),
        "--results-dir",
        str(results),
    ]
    # started as `cmd &` in a script starts it: with SIGINT ignored, which its runs would inherit
    sweep = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 300
    while not _training(results):
        assert sweep.poll() is None and time.monotonic() < deadline, "the run did not start training"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, out + err
    assert "interrupted: long (" in out  # the per-run line, with the run id
    assert "sweep long: 0 run, 0 failed, 1 interrupted" in out
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*/record.json")]
    assert record["status"] == "interrupted" and record["training"]["steps"] < 100000
    plan_cmd = [*cmd[:4], "plan", *cmd[5:], "--format", "json"]
    plan = subprocess.run(plan_cmd, capture_output=True, text=True, env=env, check=True)
    assert json.loads(plan.stdout)["totals"]["interrupted"] == 1
