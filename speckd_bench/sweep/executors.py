"""Running a sweep's points: each point is a `speckd-bench run` subprocess (or `run --resume` of its
unfinished folder), started by local worker threads or by submitit jobs (SLURM, or submitit's local
executor). The same picklable PointJob does the work in both.

Cache sharing: points of one cache group (sweep.Point.group) share the warm start, the teacher's scores
and the teacher cache. The first wave runs one point per group whose caches are not built yet, the second
wave the rest; and a point of a group without a complete run holds the group's file lock for its whole
run, so across workers, sweeps and machines one run per group builds the caches while the others wait.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from speckd_bench.errors import EXIT_INTERRUPTED, UserError
from speckd_bench.sweep.grid import Point
from speckd_bench.sweep.status import (
    PointStatus,
    group_warm,
    lock_path,
    locks_dir,
    log_path,
    point_status,
    read_state,
    write_state,
)

ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*:")
# How long a preempted job waits for its run to checkpoint after Ctrl-C before it is requeued.
CHECKPOINT_GRACE_S = 60.0
SIGNAL_DELAY_S = {"slurm": 90, "local": 30}
"""submitit's defaults: how many seconds before the time limit a job is signalled."""
REQUEUE_MARGIN_S = 10.0
"""Of that, the time left for submitit to requeue the job once the run has stopped."""


@dataclass(frozen=True)
class Outcome:
    """What a sweep did with a point: 'skipped' (already done), 'done', 'failed' or 'interrupted'."""

    label: str
    result: str
    run_id: str | None = None
    error: str = ""
    attempts: int = 0
    seconds: float = 0.0


def command(point: Point, results_dir: Path, resume: str | None, num_processes: int | None) -> list[str]:
    """The `speckd-bench run` command line of a point: a fresh run, or the resume of an unfinished one."""
    base = [sys.executable, "-m", "speckd_bench", "run"]
    launch = ["--launcher", "accelerate", "--num-processes", str(num_processes)] if num_processes else []
    if resume is not None:
        return [*base, "--resume", resume, "--results-dir", str(results_dir), "--quiet", *launch]
    return [*base, *point.run_args(), "--results-dir", str(results_dir), "--skip-done", "--quiet", *launch]


def _last_line(path: Path, offset: int) -> str:
    """The last non-empty line written to path after offset (a failed run's error)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class PointJob:
    """Runs one point until it is done, failed `retries + 1` times, or was interrupted. Picklable: a
    submitit job calls it on the cluster, and calls `checkpoint` when the job is preempted or times out."""

    def __init__(
        self,
        point: Point,
        sweep: str,
        results_dir: Path,
        retries: int,
        num_processes: int | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.point, self.sweep, self.results_dir = point, sweep, results_dir
        self.retries, self.num_processes = retries, num_processes
        self.env = dict(env or {})
        self.grace_s = CHECKPOINT_GRACE_S
        """How long `checkpoint` waits for the run to stop before it kills it (run_submitit bounds it)."""
        self.__setstate__({})

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._child: subprocess.Popen[bytes] | None = None
        self._finished = threading.Event()
        self._stop = threading.Event()

    def interrupt(self) -> None:
        """The sweep was stopped (Ctrl-C, or SIGTERM to its pid alone): start no further attempt, and
        Ctrl-C the running one, which checkpoints and records 'interrupted'."""
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)

    def __call__(self) -> Outcome:
        t0 = time.perf_counter()
        deliver_sigint()
        locks_dir(self.results_dir).mkdir(parents=True, exist_ok=True)
        with FileLock(lock_path(self.results_dir, "run", self.point.digest)):
            status = point_status(self.results_dir, self.sweep, self.point)
            if status.status == "done":
                return Outcome(self.point.label, "skipped", status.run_id, status.error)
            with self._cache_turn():
                attempts, status, code = self._attempts(status)
        stopped = "interrupted" if code in (None, EXIT_INTERRUPTED) else "failed"  # None: not started
        result = "done" if status.status == "done" else stopped
        error = status.error if result == "failed" else ""
        return Outcome(self.point.label, result, status.run_id, error, attempts, time.perf_counter() - t0)

    @contextmanager
    def _cache_turn(self) -> Iterator[None]:
        """Hold the cache group's lock for this run unless a complete run of the group exists."""
        lock = FileLock(lock_path(self.results_dir, "group", self.point.group))
        lock.acquire()
        try:
            if group_warm(self.results_dir, self.point.group):
                lock.release()
            yield
        finally:
            if lock.is_locked:
                lock.release()

    def _attempts(self, status: PointStatus) -> tuple[int, PointStatus, int | None]:
        """Run (or resume) until done, interrupted or out of retries: (attempts, status, last exit code)."""
        attempts, code = 0, None
        while status.status != "done" and attempts <= self.retries and not self._stop.is_set():
            attempts += 1
            code = self._attempt(status.run_id, attempts)
            status = point_status(self.results_dir, self.sweep, self.point)
            if code == EXIT_INTERRUPTED:
                break
        return attempts, status, code

    def _attempt(self, resume: str | None, attempt: int) -> int:
        """One `speckd-bench run` subprocess; its output is appended to the point's log. A helper thread
        waits for it, so that `checkpoint` (a signal handler in this thread) can wait for it too."""
        cmd = command(self.point, self.results_dir, resume, self.num_processes)
        log = log_path(self.results_dir, self.sweep, self.point)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            fh.write(f"== attempt {attempt}: {' '.join(cmd)}\n".encode())
            fh.flush()
            offset = fh.tell()
            env = {**os.environ, **self.env}
            self._finished.clear()
            # Its own session: a terminal's Ctrl-C reaches the sweep alone, which passes it on once
            # (a run that got it twice would stop at once instead of checkpointing).
            child = self._child = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            threading.Thread(target=lambda: (child.wait(), self._finished.set()), daemon=True).start()
            self._finished.wait()
        self._child = None
        error = _last_line(log, offset) if child.returncode else ""
        previous = read_state(self.results_dir, self.sweep, self.point).get("attempts", 0)
        state = {"exit_code": child.returncode, "error": error, "attempts": previous + 1, "log": str(log)}
        write_state(self.results_dir, self.sweep, self.point, state)
        return child.returncode

    def checkpoint(self) -> Any:
        """submitit: the job is preempted or timed out. Ctrl-C the run (it checkpoints and records
        'interrupted'), then requeue this same job, which resumes the run from that checkpoint."""
        from submitit.helpers import DelayedSubmission

        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            if not self._finished.wait(self.grace_s):  # killed: it resumes from its last periodic checkpoint
                child.kill()
                self._finished.wait()
        return DelayedSubmission(self)


def deliver_sigint() -> None:
    """Let the runs receive Ctrl-C (the sweep's stop and a requeue's checkpoint send it): a process started
    in the background (`&` in a script, nohup) inherits SIGINT ignored, and so would its children, which
    would then train on through a stop. Only the main thread can set it."""
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def waves(jobs: list[PointJob], warm_groups: set[str]) -> list[list[PointJob]]:
    """[one job per cache group not yet built, the rest]: the caches are built before the grid fans out."""
    leaders: dict[str, PointJob] = {}
    for job in jobs:
        if job.point.group not in warm_groups:
            leaders.setdefault(job.point.group, job)
    first = list(leaders.values())
    rest = [job for job in jobs if job not in first]
    return [wave for wave in (first, rest) if wave]


def _failed(job: PointJob, exc: BaseException) -> Outcome:
    """A job that raised (submitit: e.g. timed out too often): its last 'SomeError: why' line."""
    lines = [line.strip() for line in str(exc).splitlines() if ERROR_LINE.match(line.strip())]
    return Outcome(job.point.label, "failed", error=lines[-1] if lines else f"{type(exc).__name__}: {exc}")


def default_workers(num_processes: int | None) -> int:
    """One worker on a CPU machine; one per GPU (or per num_processes GPUs) on a GPU machine."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(1, gpus // (num_processes or 1))


def worker_envs(workers: int, num_processes: int | None) -> list[dict[str, str]]:
    """Per worker: its GPUs (CUDA_VISIBLE_DEVICES) on a GPU machine, and its share of the CPU threads
    unless OMP_NUM_THREADS is set already."""
    import torch

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    base = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if not torch.cuda.is_available():
        return [dict(base) for _ in range(workers)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    per = num_processes or 1
    if workers * per > len(devices):
        raise UserError(
            f"--workers {workers} x {per} GPU(s) per run needs {workers * per} GPUs; "
            f"{len(devices)} are visible"
        )
    return [
        {**base, "CUDA_VISIBLE_DEVICES": ",".join(devices[i * per : (i + 1) * per])} for i in range(workers)
    ]


def run_local(
    jobs: list[PointJob], warm: set[str], workers: int, report: Callable[[Outcome], None]
) -> list[Outcome]:
    """Worker threads, each running one `speckd-bench run` subprocess at a time with its own env."""
    deliver_sigint()  # here, in the main thread: the workers' threads cannot set a signal handler
    envs: queue.Queue[dict[str, str]] = queue.Queue()
    for env in worker_envs(workers, jobs[0].num_processes):
        envs.put(env)

    def work(job: PointJob) -> Outcome:
        env = envs.get()
        job.env = {**env, **job.env}
        try:
            return job()
        finally:
            envs.put(env)

    outcomes: list[Outcome] = []
    futures: dict[Future[Outcome], PointJob] = {}

    def collect(future: Future[Outcome]) -> None:
        job = futures.pop(future)
        if future.cancelled():  # stopped before it started
            outcome = Outcome(job.point.label, "interrupted")
        else:
            exc = future.exception()
            outcome = _failed(job, exc) if exc else future.result()
        outcomes.append(outcome)
        report(outcome)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for wave in waves(jobs, warm):
                wave_futures = {pool.submit(work, job): job for job in wave}
                futures.update(wave_futures)
                for future in as_completed(wave_futures):
                    collect(future)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: pass it on, wait for the checkpoints, report
            for job in jobs:
                job.interrupt()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in list(futures):
                collect(future)
    return outcomes


CLUSTER_KEYS = {
    "backend": str,
    "partition": str,
    "timeout_min": int,
    "gpus_per_task": int,
    "cpus_per_task": int,
    "mem_gb": float,
    "array_parallelism": int,
    "max_num_timeout": int,
    "signal_delay_s": int,
    "additional_parameters": dict,
    "setup": list,
}


def checkpoint_grace(options: dict[str, Any]) -> float:
    """How long a signalled job may wait for its run to checkpoint: within the time the scheduler leaves
    before its kill (`signal_delay_s`), less the requeue margin, so the job is requeued before it is
    killed; at most CHECKPOINT_GRACE_S."""
    delay = options.get("signal_delay_s", SIGNAL_DELAY_S[options["backend"]])
    return max(1.0, min(CHECKPOINT_GRACE_S, delay - REQUEUE_MARGIN_S))


def cluster_options(block: dict[str, Any], flags: dict[str, Any], where: str) -> dict[str, Any]:
    """The submitit settings: the sweep file's `cluster:` block, then the command line's flags."""
    options = {"backend": "slurm", "timeout_min": 60, "array_parallelism": 16}
    for key, value in {**block, **{k: v for k, v in flags.items() if v is not None}}.items():
        kind = CLUSTER_KEYS.get(key)
        if kind is None:
            raise UserError(f"{where}: unknown cluster setting {key!r}; known: {', '.join(CLUSTER_KEYS)}")
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise UserError(f"{where}: cluster.{key} expects a {kind.__name__}, got {value!r}")
        options[key] = value
    if options["backend"] not in ("slurm", "local"):
        raise UserError(f"{where}: cluster.backend {options['backend']!r}: use slurm or local")
    if options["backend"] == "local" and "signal_delay_s" in options:
        raise UserError(
            f"{where}: cluster.signal_delay_s is a SLURM setting; submitit's local backend always signals a "
            f"job {SIGNAL_DELAY_S['local']} s before its time limit"
        )
    return options


def _executor(folder: Path, options: dict[str, Any]) -> Any:
    # submitit configures logging on import with dictConfig, which closes every handler the process
    # already has (absl's, which rouge-score installs, closes sys.stderr with it): keep our logging.
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--executor submitit needs the submitit package: pip install 'speckd-bench[cluster]'"
        ) from None
    if options["backend"] == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--executor submitit: sbatch not found (no SLURM here); --backend local runs the jobs here"
        )
    timeouts = options.get("max_num_timeout", 3)  # requeues after a time-out (preemptions do not count)
    executor = submitit.AutoExecutor(
        folder=folder,
        cluster=options["backend"],
        slurm_max_num_timeout=timeouts,
        local_max_num_timeout=timeouts,
    )
    generic = {
        "timeout_min": options["timeout_min"],
        "cpus_per_task": options.get("cpus_per_task"),
        "gpus_per_node": options.get("gpus_per_task"),
        "mem_gb": options.get("mem_gb"),
        "tasks_per_node": 1,
        "nodes": 1,
    }
    slurm = {
        "slurm_partition": options.get("partition"),
        "slurm_array_parallelism": options["array_parallelism"],
        "slurm_additional_parameters": options.get("additional_parameters"),
        "slurm_setup": options.get("setup"),
        "slurm_signal_delay_s": options.get("signal_delay_s"),
    }
    if options["backend"] == "local":
        slurm = {"local_setup": options.get("setup")}
    executor.update_parameters(**{k: v for k, v in {**generic, **slurm}.items() if v is not None})
    return executor


def run_submitit(
    jobs: list[PointJob],
    warm: set[str],
    folder: Path,
    options: dict[str, Any],
    report: Callable[[Outcome], None],
) -> list[Outcome]:
    """One array job per wave (SLURM throttles it with array_parallelism; the local backend runs at
    most that many jobs at once); waits for every job and collects its outcome."""
    executor = _executor(folder, options)
    from submitit.helpers import as_completed as finished_jobs

    if "cpus_per_task" in options and "OMP_NUM_THREADS" not in os.environ:
        threads = str(options["cpus_per_task"])
        for job in jobs:
            job.env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **job.env}
    for job in jobs:
        job.grace_s = checkpoint_grace(options)
    size = options["array_parallelism"] if options["backend"] == "local" else len(jobs)
    outcomes: list[Outcome] = []
    for wave in waves(jobs, warm):
        for start in range(0, len(wave), size):
            chunk = wave[start : start + size]
            submitted = dict(zip(executor.submit_array(chunk), chunk, strict=True))
            for sub in finished_jobs(list(submitted), poll_frequency=2):
                try:
                    outcome = sub.result()
                except Exception as exc:  # submitit raises the job's error, or why it was not requeued
                    outcome = _failed(submitted[sub], exc)
                outcomes.append(outcome)
                report(outcome)
    return outcomes
