"""A run killed with SIGKILL, or stopped with Ctrl-C, resumes from its last checkpoint and ends exactly
where an uninterrupted run of the same seed ends (CPU, deterministic algorithms)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import speckd_bench.engine.recipe
import speckd_bench.engine.scoring
from speckd_bench.cli.app import app

runner = CliRunner()
KILL_SEED = 20261130
"""Seeds the step the SIGKILL test kills at (3 to 7), so a failure repeats."""
# rule=spec with sampled proposals: the gate draws from its seeded generator, so its state must resume too.
RUN_ARGS = [
    "--preset",
    "tiny",
    "--method",
    "speckd",
    "--seed",
    "3",
    "--set",
    "train.max_steps=8",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "method.rule=spec",
    "--set",
    "method.propose=sample",
    "--max-eval-examples",
    "4",
    "--quiet",
]


def run_files(run_dir: Path) -> dict:
    record = json.loads((run_dir / "record.json").read_text())
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {"record": record, "log": log, "samples": samples}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> dict:
    out = tmp_path_factory.mktemp("reference")
    res = runner.invoke(app, ["run", *RUN_ARGS, "--data-dir", str(data_dir), "--results-dir", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    (run_dir,) = (out / "runs").iterdir()
    return run_files(run_dir)


def start_run(results: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "speckd_bench", "run", *RUN_ARGS]
        + ["--data-dir", str(data_dir), "--results-dir", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach Python even when the test runner was started with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_step(proc: subprocess.Popen, results: Path, step: int, timeout: float = 300) -> Path:
    """Poll until the run has logged `step` training steps and written a checkpoint; its run dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for run_dir in (results / "runs").glob("*"):
            log = run_dir / "train_log.jsonl"
            if (
                log.is_file()
                and log.read_text().count("\n") >= step
                and any((run_dir / "checkpoints").glob("step-*"))
            ):
                return run_dir
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"the run did not reach step {step} in {timeout} s")


def assert_same_results(run_dir: Path, reference: dict) -> None:
    got = run_files(run_dir)
    assert got["record"]["status"] == "complete"
    assert got["record"]["training"]["final_loss"] == reference["record"]["training"]["final_loss"]
    assert got["record"]["training"] == reference["record"]["training"]
    for key in ("step", "loss", "divergence", "tar", "grad_norm", "lr", "target_tokens"):
        assert [r[key] for r in got["log"]] == [r[key] for r in reference["log"]], key
    assert got["samples"] == reference["samples"]
    after, ref_after = (r["record"]["metrics"]["dolly"]["after"] for r in (got, reference))
    assert after["metrics"] == ref_after["metrics"] and after["per_seed"] == ref_after["per_seed"]
    assert not (run_dir / "checkpoints").exists()  # complete: nothing left to resume
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(
    tmp_path, data_dir, reference, monkeypatch
):
    kill_after = random.Random(KILL_SEED).randint(3, 7)
    proc = start_run(tmp_path, data_dir)
    run_dir = wait_for_step(proc, tmp_path, kill_after)
    proc.kill()
    proc.communicate()
    assert not (run_dir / "record.json").exists(), f"the run ended before the kill after step {kill_after}"
    before = json.loads((run_dir / "state.json").read_text())["before"]

    listed = runner.invoke(app, ["table", "--results-dir", str(tmp_path), "--format", "json"])
    assert json.loads(listed.stdout) == [] and "--resume" in listed.stderr

    evaluations = []
    real_evaluate = speckd_bench.engine.scoring.evaluate_sets
    monkeypatch.setattr(
        speckd_bench.engine.scoring,
        "evaluate_sets",
        lambda *a, **kw: evaluations.append(a[4]) or real_evaluate(*a, **kw),
    )
    monkeypatch.setattr(
        speckd_bench.engine.recipe.RunRecipe, "_build_init", lambda *a: pytest.fail("init rebuilt")
    )
    monkeypatch.setattr(
        speckd_bench.engine.recipe.WarmStart, "load_into", lambda *a: pytest.fail("init reloaded")
    )
    res = runner.invoke(app, ["run", "--resume", "last", "--results-dir", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception, kill_after)
    assert evaluations == ["eval trained student"]  # the before-training scores came from the run's state
    assert_same_results(run_dir, reference)
    record = json.loads((run_dir / "record.json").read_text())
    assert record["metrics"]["dolly"]["before"] == before["dolly"]  # state keeps per eval set
    assert 2 <= record["resumed_from_step"][0] <= kill_after


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_records_interrupted_and_resumes_from_a_moved_folder(tmp_path, data_dir, reference):
    """The run folder keeps no path of the machine that started it, so a copied or moved results folder
    resumes where it now lies."""
    started = tmp_path / "started"
    proc = start_run(started, data_dir)
    run_dir = wait_for_step(proc, started, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--resume {run_dir.name}" in err

    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted"
    stopped = record["training"]["steps"]
    assert 3 <= stopped < 8
    assert record["resume"]["checkpoint_step"] == stopped
    assert (run_dir / "checkpoints" / f"step-{stopped:06d}").is_dir()
    for name in ("config.json", "state.json"):
        assert str(tmp_path) not in (run_dir / name).read_text(), name

    moved = started.rename(tmp_path / "moved")
    run_dir = moved / "runs" / run_dir.name
    hidden = runner.invoke(app, ["table", "--results-dir", str(moved), "--format", "json"])
    assert json.loads(hidden.stdout) == []
    assert "status interrupted" in hidden.stderr
    shown = runner.invoke(
        app, ["table", "--results-dir", str(moved), "--format", "json", "--include-interrupted"]
    )
    (row,) = [r for r in json.loads(shown.stdout) if r["kind"] == "method"]
    assert row["run_ids"] == [run_dir.name] and row["mean"] is None

    res = runner.invoke(app, ["run", "--resume", run_dir.name, "--results-dir", str(moved), "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert_same_results(run_dir, reference)
    assert json.loads((run_dir / "record.json").read_text())["resumed_from_step"] == [stopped]


@pytest.mark.slow
def test_resume_needs_an_unfinished_run(tmp_path, reference):
    run_id = reference["record"]["run_id"]
    empty = runner.invoke(app, ["run", "--resume", "last", "--results-dir", str(tmp_path)])
    assert "no unfinished run" in str(empty.exception)
    (tmp_path / "runs" / run_id).mkdir(parents=True)
    (tmp_path / "runs" / run_id / "record.json").write_text(json.dumps(reference["record"]))
    done = runner.invoke(app, ["run", "--resume", run_id, "--results-dir", str(tmp_path)])
    assert "already complete" in str(done.exception)
    typo = runner.invoke(app, ["run", "--resume", run_id[:-1], "--results-dir", str(tmp_path)])
    assert f"no unfinished run {run_id[:-1]!r}" in str(typo.exception)


def test_a_save_that_dies_midway_leaves_the_previous_checkpoints(tmp_path, monkeypatch):
    import torch

    from speckd_bench.engine.run_state import Checkpoints, TrainProgress

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(0)
    log_path = tmp_path / "log.jsonl"
    ckpts = Checkpoints(tmp_path / "ckpt", {"seed": 1}, every=1, keep=2)
    with open(log_path, "w") as log:
        for step in (1, 2, 3):
            log.write(f'{{"step": {step}}}\n')
            ckpts.save(TrainProgress(step, log.tell()), model, opt, sched, gen, log)
        assert [p.name for p in ckpts.all()] == ["step-000002", "step-000003"]
        log.write('{"step": 4}\n')
        with monkeypatch.context() as mp:
            mp.setattr(torch, "save", lambda *a, **kw: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                ckpts.save(TrainProgress(4, log.tell()), model, opt, sched, gen, log)
    (tmp_path / "ckpt" / ".step-000004-killed").mkdir()  # what a SIGKILL during a save leaves
    assert [p.name for p in ckpts.all()] == ["step-000002", "step-000003"]
    fresh = Checkpoints(tmp_path / "ckpt", {"seed": 1}, every=1, keep=2)
    assert fresh.restore(model, opt, sched, gen, log_path).step == 3
    assert log_path.read_text().count("\n") == 3  # the log is cut back to the checkpoint
    assert not list((tmp_path / "ckpt").glob(".step-*"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_checkpoints_records_interrupted_and_resumes_to_the_same_result(
    tmp_path, data_dir, reference
):
    proc = start_run(tmp_path, data_dir)
    run_dir = wait_for_step(proc, tmp_path, 3)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends before it preempts a job
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert err.count("\n") == 1 and err.startswith("interrupted: ") and "Traceback" not in err
    assert f"continue it with: speckd-bench run --resume {run_dir.name}" in err
    record = json.loads((run_dir / "record.json").read_text())
    stopped = record["training"]["steps"]
    assert record["status"] == "interrupted" and record["resume"]["checkpoint_step"] == stopped
    first_wall = record["timings"]["wall_s"]

    res = runner.invoke(app, ["run", "--resume", "last", "--results-dir", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert_same_results(run_dir, reference)
    final = json.loads((run_dir / "record.json").read_text())
    assert final["resumed_from_step"] == [stopped]
    assert final["timings"]["wall_s"] > first_wall  # both sessions counted
    assert not (run_dir / ".lock").exists()  # a complete run folder keeps no lock file
