"""Sweeps: grid expansion, digests, statuses and bad files (fast); a tiny grid run end to end with the
local executor and with submitit's local executor (slow: real `speckd-bench run` subprocesses)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from speckd_bench.cli.app import main
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.engine.recipe import build_run_config
from speckd_bench.methods.discovery import discover_methods
from speckd_bench.records.run_record import RunRecord
from speckd_bench.records.store import find_complete
from speckd_bench.sweep import executors as sweep_executors
from speckd_bench.sweep.executors import (
    PointJob,
    checkpoint_grace,
    cluster_options,
    command,
    deliver_sigint,
    waves,
)
from speckd_bench.sweep.grid import config_keys, expand, load_sweep, resolve
from speckd_bench.sweep.status import SeenRun, classify, scan_runs, statuses

GRID = """\
name: tiny
preset: tiny
task: dolly
method: {methods}
seed: [1, 2]
set:
  data.data_dir: {data_dir}
  data.max_eval_examples: 4
  train.max_steps: 8
  train.checkpoint_every: 2
variants:
  spec: {{set: {{method.rule: spec}}, only: {{method: speckd, seed: 1}}}}
"""
# A bad override the config accepts but the run refuses: the run fails, the grid goes on.
BROKEN = "  broken: {set: {method.divergence: nope}, only: {method: speckd, seed: 2}}\n"
LABELS = [
    "method=sft seed=1",
    "method=sft seed=2",
    "method=speckd seed=1",
    "method=speckd seed=1 variant=spec",
    "method=speckd seed=2",
    "method=speckd seed=2 variant=broken",
]


def grid_text(
    data_dir: Path, results: Path | None = None, broken: bool = False, methods: str = "[sft, speckd]"
) -> str:
    """The tiny grid's text: 2 methods x 2 seeds, a variant (and a run that fails)."""
    text = GRID.format(data_dir=data_dir, methods=methods) + (BROKEN if broken else "")
    return text + (f"results_dir: {results}\n" if results else "")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- grid, digest, status (fast)


def test_grid_expands_axes_in_file_order_with_variants_after_their_point(tmp_path):
    sweep = load_sweep(write(tmp_path / "g.yaml", grid_text(tmp_path, broken=True)))
    points = expand(sweep, tmp_path)
    assert [p.label for p in points] == LABELS
    spec = points[3]
    assert spec.coords == {"method": "speckd", "seed": "1", "variant": "spec"}
    assert spec.settings["method.rule"] == "spec" and spec.settings["train.max_steps"] == "8"
    assert spec.run_args()[:8] == ["--preset", "tiny", "--task", "dolly", "--method", "speckd", "--seed", "1"]
    assert "method.rule=spec" in spec.run_args()
    # seed and method settings vary inside one cache group: the same warm start and teacher scores
    assert len({p.group for p in points}) == 1
    assert len({p.digest for p in points}) == len(points)


def test_skip_leaves_out_the_points_meeting_a_condition(tmp_path):
    text = grid_text(tmp_path) + "skip:\n  - {method: [sft], seed: 2}\n  - {variant: spec, seed: 1}\n"
    kept = [p.label for p in expand(load_sweep(write(tmp_path / "g.yaml", text)), tmp_path)]
    full = [p.label for p in expand(load_sweep(write(tmp_path / "f.yaml", grid_text(tmp_path))), tmp_path)]
    left_out = [label for label in full if label not in kept]
    assert left_out == ["method=sft seed=2", "method=speckd seed=1 variant=spec"]
    assert kept == [label for label in full if label in kept]  # the order of the rest is unchanged


def test_digest_is_what_skip_done_compares(tmp_path):
    sweep = load_sweep(write(tmp_path / "g.yaml", grid_text(tmp_path)))
    first, again = expand(sweep, tmp_path), expand(sweep, tmp_path / "elsewhere")
    assert [p.digest for p in first] == [p.digest for p in again]  # paths are no result keys
    discover_tasks()
    discover_methods()
    # The config `speckd-bench run --preset tiny --method speckd --seed 1 --set ...` builds:
    overrides = {
        "task": "dolly",
        "seed": 1,
        "data.max_eval_examples": "4",
        "train.max_steps": "8",
        "train.checkpoint_every": "2",
        "method.rule": "spec",
    }
    cfg = build_run_config(method="speckd", preset="tiny", overrides=overrides)
    assert config_keys(cfg.to_dict())[0] == first[3].digest
    # a complete record with that config is what --skip-done finds, and the sweep calls it done
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    empty = {k: {} for k in ("versions", "hardware", "timings", "metrics", "paths")}
    record = RunRecord(
        run_id="r1", status="complete", task="dolly", main_metric="rougeL", config=cfg.to_dict(), **empty
    )
    record.write(run / "record.json")
    assert find_complete(tmp_path, cfg) is not None
    rows = statuses(tmp_path, sweep.name, first)
    assert [r.status for r in rows] == ["missing", "missing", "missing", "done", "missing"]
    assert rows[3].run_id == "r1"


def test_status_classification(tmp_path):
    (point,) = expand(load_sweep(write(tmp_path / "g.yaml", "preset: tiny\nmethod: fkl\n")), tmp_path)

    def seen(run_id: str, complete: bool, note: str = "") -> SeenRun:
        return SeenRun(run_id, complete, point.digest, point.group, note)

    def status(runs, state=None, running=False):
        return classify(point, runs, state or {}, running, tmp_path)

    other = SeenRun("x", True, "another digest", point.group)
    assert status([other]).status == "missing"
    assert status([seen("a", False)]).status == "interrupted"
    assert status([seen("a", False), seen("b", False)]).run_id == "b"  # the newest unfinished one
    assert status([seen("a", False)], running=True).status == "running"
    failed = status([], {"exit_code": 2, "error": "error: unknown divergence 'x'"})
    assert (failed.status, failed.error) == ("failed", "error: unknown divergence 'x'")
    assert status([seen("a", False)], {"exit_code": 130}).status == "interrupted"  # Ctrl-C: no failure
    done = status([seen("a", False), seen("c", True, "diverged at step 3")], {"exit_code": 2}, running=True)
    assert (done.status, done.run_id, done.error) == ("done", "c", "diverged at step 3")


def test_scan_reads_complete_records_and_unfinished_run_folders(tmp_path):
    run = tmp_path / "runs" / "20260101-000000-killed"
    run.mkdir(parents=True)
    cfg = resolve({"preset": "tiny"}, tmp_path)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "train_log.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (seen,) = scan_runs(tmp_path)
    assert (seen.run_id, seen.complete) == (run.name, False)
    (point,) = expand(load_sweep(write(tmp_path / "g.yaml", "preset: tiny\n")), tmp_path)
    (row,) = statuses(tmp_path, "g", [point])
    assert (row.status, row.run_id, row.steps) == ("interrupted", run.name, 2)


def test_waves_build_each_cache_group_once_before_fanning_out(tmp_path):
    text = "preset: tiny\ntrain.lr: [0.001, 0.01]\nseed: [1, 2]\n"
    points = expand(load_sweep(write(tmp_path / "g.yaml", text)), tmp_path)
    jobs = [PointJob(p, "g", tmp_path, 1, None) for p in points]
    first, rest = waves(jobs, set())
    assert [j.point.label for j in first] == ["train.lr=0.001 seed=1", "train.lr=0.01 seed=1"]
    assert len(rest) == 2
    first, rest = waves(jobs, {points[0].group})  # a group with a complete run needs no leader
    assert [j.point.label for j in first] == ["train.lr=0.01 seed=1"] and len(rest) == 3


BAD_FILES = [
    ("method: [sft\n", "malformed YAML"),
    ("- sft\n", "a sweep file is a mapping"),
    ("name: a/b\n", "name 'a/b'"),
    ("method: []\n", "axis method.name is an empty list"),
    ("seed: [1, 1]\n", "axis seed repeats a value"),
    ("method: [[sft]]\n", "expected a single value"),
    ("trian.lr: 0.1\n", "unknown config key 'trian.lr'"),
    ("method: [sft, nope]\n", "run method=nope"),
    ("train.lr: 0.1\nset: {train.lr: 0.2}\n", "train.lr given both"),
    ("variants: {a: {}}\n", "variant a must be a non-empty mapping"),
    ("variants: {a: {set: {method.k: 3}, method.k: 2}}\n", "mix of overrides and set/only"),
    ("variants: {a: {set: {method.k: 3}, only: {seed: 1}}}\n", "only: seed is not a setting"),
    ("method: fkl\nvariants: {same: {method.temperature: 1.0}}\n", "resolve to the same config"),
    ("num_processes: 0\n", "num_processes must be an integer >= 1"),
    ("skip: {method: fkl}\n", "skip must be a list of conditions"),
    ("skip: [{nope: 1}]\n", "skip: nope is not a setting"),
    ("results_dir: [a, b]\n", "results_dir cannot be an axis"),
    ("preset: [tiny, nope]\n", "unknown preset 'nope'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_sweep_files_are_one_line_exit_2(tmp_path, monkeypatch, capsys, text, message):
    path = write(tmp_path / "bad.yaml", text)
    code, _, err = cli(monkeypatch, capsys, "sweep", "plan", path, "--results-dir", tmp_path)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "missing.yaml"], "does not exist"),
        (["plan", "{file}", "--format", "csv"], "--format 'csv'"),
        (["run", "{file}", "--executor", "pbs"], "--executor 'pbs'"),
        (["run", "{file}", "--partition", "gpu"], "need --executor submitit"),
        (["run", "{file}", "--executor", "submitit", "--workers", "2"], "--workers applies to"),
        (["run", "{file}", "--executor", "submitit"], "sbatch not found"),
    ],
)
def test_bad_sweep_options_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    path = write(tmp_path / "ok.yaml", "preset: tiny\n")
    args = [a.replace("{file}", str(path)) for a in args]
    code, _, err = cli(monkeypatch, capsys, "sweep", *args, "--results-dir", tmp_path)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_cluster_settings(tmp_path, monkeypatch):
    options = cluster_options({"partition": "gpu", "timeout_min": 30}, {"timeout_min": 90}, "f.yaml")
    assert options["partition"] == "gpu" and options["timeout_min"] == 90  # flags win over the file
    with pytest.raises(Exception, match="unknown cluster setting 'gpus'"):
        cluster_options({"gpus": 1}, {}, "f.yaml")
    with pytest.raises(Exception, match="cluster.backend 'pbs'"):
        cluster_options({"backend": "pbs"}, {}, "f.yaml")
    assert checkpoint_grace(cluster_options({"backend": "local"}, {}, "f.yaml")) == 20  # signalled 30 s early
    assert checkpoint_grace(options) == 60  # SLURM signals 90 s early; the wait stays at 60 s
    assert checkpoint_grace(cluster_options({"signal_delay_s": 40}, {}, "f.yaml")) == 30
    with pytest.raises(Exception, match="cluster.signal_delay_s is a SLURM setting"):
        cluster_options({"backend": "local", "signal_delay_s": 40}, {}, "f.yaml")
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    from speckd_bench.errors import UserError
    from speckd_bench.sweep.executors import run_submitit

    with pytest.raises(UserError, match=r"pip install 'speckd-bench\[cluster\]'"):
        run_submitit([], set(), tmp_path, options, print)


def test_checkpoint_interrupts_the_run_and_requeues_the_same_point(tmp_path, monkeypatch):
    """What submitit calls on preemption: Ctrl-C reaches the run, and the requeued job is this point."""
    pytest.importorskip("submitit")
    (point,) = expand(load_sweep(write(tmp_path / "g.yaml", "preset: tiny\n")), tmp_path)
    code = "import time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)\n"
    monkeypatch.setattr(sweep_executors, "command", lambda *a: [sys.executable, "-c", code])
    previous = signal.getsignal(signal.SIGINT)
    deliver_sigint()  # as a submitit job does: its run must get Ctrl-C even when started in the background
    job = PointJob(point, "g", tmp_path, 1, None)
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.append(job()))
    thread.start()
    while job._child is None:
        time.sleep(0.05)
    time.sleep(2.0)  # the child has installed Python's Ctrl-C handler
    delayed = job.checkpoint()
    thread.join(timeout=30)
    signal.signal(signal.SIGINT, previous)
    (outcome,) = outcomes
    assert (outcome.result, outcome.attempts) == ("interrupted", 1)  # not retried: it resumes on requeue
    requeued = pickle.loads(pickle.dumps(delayed.function))
    assert requeued.point == point and requeued._child is None


def test_a_run_that_does_not_stop_in_the_grace_is_killed_and_the_job_still_requeued(tmp_path, monkeypatch):
    """A run that ignores Ctrl-C (stuck in a long step) must not hold the job past the scheduler's kill:
    after `grace_s` it is killed (it resumes from its last periodic checkpoint) and the job is requeued."""
    pytest.importorskip("submitit")
    (point,) = expand(load_sweep(write(tmp_path / "g.yaml", "preset: tiny\n")), tmp_path)
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(120)\n"
    monkeypatch.setattr(sweep_executors, "command", lambda *a: [sys.executable, "-c", code])
    job = PointJob(point, "g", tmp_path, 0, None)
    job.grace_s = 1.0
    thread = threading.Thread(target=job)
    thread.start()
    while job._child is None:
        time.sleep(0.05)
    child = job._child
    time.sleep(1.0)  # the child ignores Ctrl-C by now
    start = time.monotonic()
    delayed = job.checkpoint()
    assert time.monotonic() - start < 10 and child.poll() is not None
    thread.join(timeout=30)
    assert pickle.loads(pickle.dumps(delayed.function)).grace_s == 1.0


# ---------------------------------------------------------------- end to end (slow)


def sweep_cmd(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "speckd_bench", "sweep", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/record.json"))]


def kill_mid_training(point, results: Path) -> tuple[Path, int]:
    """Start a point's run, SIGKILL it once it has logged 3 steps and checkpointed; (run dir, step)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(point, results, None, None), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        for run_dir in (results / "runs").glob("*"):
            log, ckpts = run_dir / "train_log.jsonl", sorted((run_dir / "checkpoints").glob("step-*"))
            if log.is_file() and log.read_text().count("\n") >= 3 and ckpts:
                proc.kill()
                proc.wait()
                assert not (run_dir / "record.json").exists()
                return run_dir, int(sorted((run_dir / "checkpoints").glob("step-*"))[-1].name[5:])
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the run did not reach step 3")


def check_grid(results: Path, first: subprocess.CompletedProcess) -> None:
    """Every run but the broken one has exactly one complete record; the broken one is reported."""
    assert first.returncode == 1, first.stdout + first.stderr
    got = records(results)
    assert len(got) == 5 and all(r["status"] == "complete" for r in got)
    assert len({r["run_id"] for r in got}) == 5 == len(list((results / "runs").iterdir()))
    assert "failed: method=speckd seed=2 variant=broken" in first.stdout
    assert "unknown divergence 'nope'" in first.stdout
    plan = json.loads(sweep_cmd("plan", results / "grid.yaml", "--format", "json").stdout)
    assert plan["totals"] == {"done": 5, "running": 0, "interrupted": 0, "failed": 1, "missing": 0}
    (broken,) = [r for r in plan["runs"] if r["status"] == "failed"]
    assert broken["error"].startswith("error: unknown divergence 'nope'")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, data_dir):
    """The grid with the local executor (2 workers), after one of its runs was killed mid-training."""
    results = tmp_path_factory.mktemp("local")
    sweep_file = write(results / "grid.yaml", grid_text(data_dir, results, broken=True))
    points = expand(load_sweep(sweep_file), results)
    killed, step = kill_mid_training(points[2], results)
    first = sweep_cmd("run", sweep_file, "--workers", "2")
    second = sweep_cmd("run", sweep_file, "--retries", "0")
    clean = write(results / "clean.yaml", grid_text(data_dir, results))
    third = sweep_cmd("run", clean)
    return SimpleNamespace(
        data_dir=data_dir, results=results, killed=killed, step=step, first=first, second=second, third=third
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_local_executor_writes_every_record_once_and_reports_the_failure(local_sweep):
    check_grid(local_sweep.results, local_sweep.first)
    assert "sweep tiny: 5 run, 1 failed" in local_sweep.first.stdout  # the killed one included
    logs = (local_sweep.results / "sweeps" / "tiny" / "logs").glob("*.log")
    attempts = sorted(p.read_text().count("== attempt") for p in logs)
    assert attempts == [1, 1, 1, 1, 1, 3]  # the failing one: tried and retried, then tried by the second


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_killed_run_is_resumed_not_restarted(local_sweep):
    record = json.loads((local_sweep.killed / "record.json").read_text())
    assert record["status"] == "complete" and record["resumed_from_step"] == [local_sweep.step]
    log = [json.loads(line) for line in (local_sweep.killed / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 9)) and record["training"]["steps"] == 8
    assert "done: method=speckd seed=1 (" + local_sweep.killed.name in local_sweep.first.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_run_runs_nothing_done(local_sweep):
    second, third = local_sweep.second, local_sweep.third
    assert second.returncode == 1 and "5 of 6 runs done" in second.stdout
    assert "sweep tiny: 0 run, 1 failed" in second.stdout  # only the failed one was tried again
    assert third.returncode == 0, third.stdout + third.stderr
    assert (
        third.stdout.strip() == f"nothing to run: all 5 runs of sweep tiny are done in {local_sweep.results}"
    )
    assert len(records(local_sweep.results)) == 5


@pytest.mark.slow
@pytest.mark.subprocess
def test_report_takes_exactly_the_sweeps_runs(local_sweep, tmp_path, monkeypatch, capsys):
    sft = write(tmp_path / "sft.yaml", grid_text(local_sweep.data_dir, methods="[sft]"))
    out = tmp_path / "README.md"
    res = local_sweep.results
    code, _, err = cli(monkeypatch, capsys, "report", "--results-dir", res, "--sweep", sft, "--out", out)
    assert code == 0, err
    assert "from the 2 run records" in out.read_text()


@pytest.mark.slow
@pytest.mark.subprocess
def test_submitit_local_executor_runs_the_same_grid(tmp_path, data_dir):
    pytest.importorskip("submitit")
    sweep_file = write(tmp_path / "grid.yaml", grid_text(data_dir, tmp_path, broken=True))
    first = sweep_cmd(
        "run",
        sweep_file,
        "--executor",
        "submitit",
        "--backend",
        "local",
        "--array-parallelism",
        "2",
        "--retries",
        "0",
    )
    check_grid(tmp_path, first)
    assert list((tmp_path / "sweeps" / "tiny" / "submitit").glob("*_submitted.pkl"))
    clean = write(tmp_path / "clean.yaml", grid_text(data_dir, tmp_path))
    again = sweep_cmd("run", clean, "--executor", "submitit", "--backend", "local")
    assert again.returncode == 0 and again.stdout.startswith("nothing to run: all 5 runs"), again.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_timed_out_submitit_job_is_requeued_and_resumes(tmp_path, data_dir):
    """submitit's local executor signals the job 30 s before its 1-minute limit, like SLURM before a
    time-out: the run checkpoints, the job requeues itself and the run continues from that step. Each
    attempt trains for about 30 s less its start-up, and the local executor starts a job at most six times
    (its own ceiling, whatever max_num_timeout says): 100 steps take two or three attempts on two free
    cores; a machine so loaded that a tiny run cannot start within 30 s cannot pass this test."""
    pytest.importorskip("submitit")
    text = (
        f"preset: tiny\nmethod: fkl\nresults_dir: {tmp_path}\n"
        f"set: {{data.data_dir: {data_dir}, data.max_eval_examples: 4, train.max_steps: 100, "
        "train.checkpoint_every: 5, eval.eval_before: false}\n"
        "cluster: {backend: local, timeout_min: 1, max_num_timeout: 5}\n"
    )
    sweep_file = write(tmp_path / "long.yaml", text)
    res = sweep_cmd("run", sweep_file, "--executor", "submitit")
    assert res.returncode == 0, res.stdout + res.stderr
    (record,) = records(tmp_path)
    assert record["resumed_from_step"], "the job finished before its time limit: raise train.max_steps"
    run_dir = tmp_path / "runs" / record["run_id"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 101))
