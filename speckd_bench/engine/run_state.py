"""Resumable runs. A run directory holds its resolved config (config.json), what its finished stages
produced (state.json) and training checkpoints (checkpoints/step-NNNNNN/: student weights, optimizer,
scheduler, every RNG, data position, training-log offset). Each is written to a temporary name and
renamed into place, so a kill at any moment leaves the last complete checkpoint to resume from; a
checkpoint's state.json holds the SHA-256 of its weight files, checked before it is loaded. The main
process of a run holds the folder's lock (.lock) for as long as it runs: one folder, one writer.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_model, save_model

from speckd_bench.caches import (
    atomic_write_json,
    checksum_problem,
    checksums,
    publish_dir,
    read_json,
    writing,
)
from speckd_bench.config.result_keys import result_changes, result_config
from speckd_bench.config.run_config import RunConfig, apply_overrides, config_from_dict, validate
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.methods.discovery import method_config
from speckd_bench.progress import warn
from speckd_bench.records.run_record import portable_config
from speckd_bench.records.store import load_records

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
CHECKPOINTS = "checkpoints"
LOCK_FILE = ".lock"
WEIGHT_FILES = ("student.safetensors", "trainer.pt")
STARTED_WITH = "config"
"""The key of state.json that keeps the config a run started with: config.json edited later is refused."""
FINAL_CHECKSUMS = "checksums.json"
"""{file: {sha256, bytes}} of every other file of a run's final checkpoint."""


def _live_error(run_dir: Path) -> UserError:
    owner = RunState.peek(run_dir).get("owner", {})
    pid = f" (pid {owner['pid']} on {owner.get('host', '?')})" if "pid" in owner else ""
    return UserError(
        f"run {run_dir.name} is being trained by another process{pid}; wait for it or stop it "
        f"(Ctrl-C, or kill -TERM), then resume it with: speckd-bench run --resume {run_dir.name}"
    )


def is_live(run_dir: Path) -> bool:
    """Whether a process holds the run folder's lock (is training it now)."""
    if not (run_dir / LOCK_FILE).is_file():
        return False
    lock = FileLock(run_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


class RunState:
    """What a run directory knows about itself: its config, and the results of its finished stages.
    The process that runs it `hold`s the folder's lock until `release`; not `writable`: kept in memory
    only (the non-main processes of a multi-process run)."""

    def __init__(self, run_dir: Path, writable: bool = True) -> None:
        self.dir, self.writable = run_dir, writable
        self.lock = FileLock(run_dir / LOCK_FILE)
        self._state = self.peek(run_dir)

    def hold(self) -> RunState:
        """Take the folder's lock (UserError when another process holds it) and note who holds it."""
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise _live_error(self.dir) from None
        self._state = self.peek(self.dir)
        self.put("owner", {"pid": os.getpid(), "host": socket.gethostname()})
        return self

    @staticmethod
    def peek(run_dir: Path) -> dict[str, Any]:
        """The stored state of a run folder (empty before its first stage); UserError when garbled."""
        path = run_dir / STATE_FILE
        if not path.is_file():
            return {}
        try:
            state = read_json(path)
        except ValueError as exc:
            state = str(exc)
        if not isinstance(state, dict):
            raise UserError(
                f"{path} is broken ({state if isinstance(state, str) else 'not a JSON object'}): run "
                f"{run_dir.name} cannot be resumed; start a new run"
            )
        return state

    @classmethod
    def create(cls, run_dir: Path, cfg: RunConfig, hold: bool = False) -> RunState:
        """A new run folder; with `hold`, locked before its config is written (so no resume picks it up)."""
        with writing(run_dir.parent):
            run_dir.mkdir(parents=True)
        state = cls(run_dir).hold() if hold else cls(run_dir)
        kept = portable_config(cfg.to_dict(), keep_data_dir=True)  # resume takes the results folder
        atomic_write_json(run_dir / CONFIG_FILE, kept)
        state.put(STARTED_WITH, kept)
        return state

    def release(self, complete: bool = False) -> None:
        """Let another process resume this run folder; a `complete` run's folder keeps no lock file."""
        if self.lock.is_locked:
            if complete:
                (self.dir / LOCK_FILE).unlink(missing_ok=True)
            self.lock.release()

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self._state[key] = value
        if self.writable:
            atomic_write_json(self.dir / STATE_FILE, self._state)


def _last_activity(run_dir: Path) -> float:
    return max(p.stat().st_mtime for p in run_dir.iterdir() if p.name != LOCK_FILE)


def find_run(results_dir: Path, which: str) -> Path:
    """The directory of an unfinished run: its id under results_dir/runs, or 'last' (the most recently
    active one that no process is training now)."""
    runs = results_dir / "runs"
    complete = {r.run_id for r in load_records(results_dir).records}
    unfinished = [p.parent for p in runs.glob(f"*/{CONFIG_FILE}") if p.parent.name not in complete]
    if which == "last":
        stopped = [d for d in unfinished if not is_live(d)]
        if not stopped:
            live = f" that no process trains ({len(unfinished)} being trained now)" if unfinished else ""
            raise UserError(
                f"no unfinished run under {runs} to resume{live}; pass --results-dir DIR where the run was "
                "started"
            )
        return max(stopped, key=_last_activity)
    if which in complete:
        raise UserError(f"run {which} under {runs} is already complete; there is nothing to resume")
    run_dir = runs / which
    if run_dir not in unfinished:
        names = [d.name for d in unfinished]
        raise UserError(
            f"no unfinished run {which!r} under {runs}{did_you_mean(which, names)}; "
            "pass a run id from that folder, --resume last, or --results-dir DIR"
        )
    if is_live(run_dir):
        raise _live_error(run_dir)
    return run_dir


def _check_edits(run_dir: Path, stored: Any) -> None:
    """Fail when config.json's result settings differ from those the run started with (kept in state.json
    by runs since that was added)."""
    started = RunState.peek(run_dir).get(STARTED_WITH)
    if not isinstance(started, dict) or not isinstance(stored, dict):
        return
    edits = result_changes(started, stored)
    if edits:
        raise UserError(
            f"{run_dir / CONFIG_FILE} was edited after run {run_dir.name} started ({'; '.join(edits)}); a "
            f"run resumes only with the settings it started with: put those values back in {CONFIG_FILE}, or "
            "start a new run"
        )


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The run's own resolved config; command-line overrides may change only paths and checkpointing."""
    path = run_dir / CONFIG_FILE
    try:
        stored = read_json(path)
    except ValueError as exc:
        raise UserError(
            f"{path} is broken ({exc}): run {run_dir.name} cannot be resumed; start a new run"
        ) from None
    _check_edits(run_dir, stored)
    cfg = config_from_dict(stored, method_config, str(path))
    missing = sorted(set(result_config(cfg.to_dict())) - set(result_config(stored)))
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}: it was edited or written by an older version; put back the "
            f"values run {run_dir.name} started with, or start a new run"
        )
    apply_overrides(cfg, overrides, "the command line")
    validate(cfg)
    changes = result_changes(stored, cfg.to_dict())
    if changes:
        raise UserError(
            f"run {run_dir.name} was started with other settings ({'; '.join(changes)}); a resumed run "
            "keeps its own config: drop those options, or start a new run"
        )
    cfg.results_dir = str(run_dir.parent.parent)
    return cfg


@dataclass
class TrainProgress:
    """Where training stands after `step` optimiser steps."""

    step: int = 0
    """Optimiser steps done: resuming skips step * grad_accum micro-batches of the seeded data order."""
    log_offset: int = 0
    """Bytes of the training log those steps wrote; a resumed run cuts the log back to it."""
    target_tokens: int = 0
    seq_tokens: int = 0
    seconds: float = 0.0

    def advance(
        self, step: int, target_tokens: int, seq_tokens: int, log_offset: int, seconds: float
    ) -> None:
        self.step, self.log_offset, self.seconds = step, log_offset, seconds
        self.target_tokens += target_tokens
        self.seq_tokens += seq_tokens


def _rng_states(gate_gen: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "gate": gate_gen.get_state(),
    }


def _set_rng_states(states: dict[str, Any], gate_gen: torch.Generator) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    gate_gen.set_state(states["gate"])


class Checkpoints:
    """The resumable training checkpoints of one run: <run>/checkpoints/step-NNNNNN/, newest `keep` kept."""

    def __init__(self, root: Path, config: dict[str, Any], every: int, keep: int) -> None:
        self.root, self.config, self.every, self.keep = root, config, every, keep
        self._saved_step: int | None = None
        self._verified: set[Path] = set()

    @classmethod
    def of_run(cls, run_dir: Path, cfg: RunConfig) -> Checkpoints:
        return cls(
            run_dir / CHECKPOINTS, cfg.to_dict(), cfg.train.checkpoint_every, cfg.train.keep_checkpoints
        )

    def all(self) -> list[Path]:
        return sorted(self.root.glob("step-*")) if self.root.is_dir() else []

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def latest_step(self) -> int | None:
        latest = self.latest()
        return None if latest is None else int(latest.name.removeprefix("step-"))

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _broken(self, checkpoint: Path, why: str) -> UserError:
        """The error for a checkpoint that cannot be trusted, with the fix: remove it, so the previous one
        is the newest."""
        older = [p for p in self.all() if p < checkpoint]
        then = f"resume from {older[-1].name}" if older else "restart training from its first step"
        return UserError(
            f"checkpoint {checkpoint} is broken ({why}); remove that folder to {then}, or start a new run"
        )

    def _state(self, checkpoint: Path) -> dict[str, Any]:
        try:
            state = read_json(checkpoint / STATE_FILE)
        except ValueError as exc:
            raise self._broken(checkpoint, str(exc)) from None
        if not isinstance(state, dict) or not {"progress", "config"} <= state.keys():
            raise self._broken(checkpoint, f"{STATE_FILE} lacks its progress or config")
        return state

    def verified(self, checkpoint: Path) -> dict[str, Any]:
        """The state of a checkpoint whose weight files match the checksums written with them."""
        state = self._state(checkpoint)
        if checkpoint not in self._verified:
            why = checksum_problem(checkpoint, state.get("sha256"))
            if why is not None:
                raise self._broken(checkpoint, why)
            self._verified.add(checkpoint)
        return state

    def check(self) -> None:
        """Fail when the newest checkpoint was written under settings other than this run's, or is broken."""
        latest = self.latest()
        if latest is None:
            return
        changes = result_changes(self._state(latest)["config"], self.config)
        if changes:
            raise UserError(
                f"checkpoint {latest} was written with other settings ({'; '.join(changes)}); a run "
                "resumes only from its own checkpoints: remove that folder or start a new run"
            )
        self.verified(latest)

    def save(
        self,
        progress: TrainProgress,
        student: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        gate_gen: torch.Generator,
        log: IO[str],
    ) -> None:
        """Checkpoint the state after progress.step steps (once per step), then drop the oldest."""
        final = self.root / f"step-{progress.step:06d}"
        if self._saved_step == progress.step or final.is_dir():
            self._saved_step = progress.step
            return
        log.flush()
        os.fsync(log.fileno())
        with publish_dir(final) as tmp:
            save_model(student, str(tmp / "student.safetensors"))
            trainer = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_states(gate_gen),
            }
            with open(tmp / "trainer.pt", "wb") as fh:  # a full disk raises OSError, not RuntimeError
                torch.save(trainer, fh)
            state = {
                "progress": asdict(progress),
                "config": self.config,
                "sha256": checksums(tmp, WEIGHT_FILES),
            }
            atomic_write_json(tmp / STATE_FILE, state)
        self._saved_step = progress.step
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old)

    def restore(
        self,
        student: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        gate_gen: torch.Generator,
        log_path: Path,
    ) -> TrainProgress:
        """Load the newest checkpoint into the training objects and cut the log back to its offset;
        a fresh TrainProgress when there is none."""
        for stale in self.root.glob(".step-*"):  # a save that a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
        latest = self.latest()
        if latest is None:
            return TrainProgress()
        self.check()
        progress = TrainProgress(**self.verified(latest)["progress"])
        if not log_path.is_file() or log_path.stat().st_size < progress.log_offset:
            raise UserError(
                f"{log_path} is shorter than checkpoint {latest} expects; it was edited or removed, "
                "so this run cannot resume: start a new run"
            )
        self.load_weights(student, latest)
        trainer = torch.load(latest / "trainer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        _set_rng_states(trainer["rng"], gate_gen)
        os.truncate(log_path, progress.log_offset)
        self._saved_step = progress.step
        return progress

    def load_weights(self, student: Any, checkpoint: Path | None = None) -> None:
        """The student weights of a checkpoint (default: the newest)."""
        path = checkpoint or self.latest()
        if path is None:
            raise UserError(f"no checkpoint under {self.root} to load; start a new run")
        self.verified(path)
        load_model(student, str(path / "student.safetensors"), device=str(next(student.parameters()).device))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def save_final(student: Any, tokenizer: Any, path: Path) -> None:
    """The trained student as a transformers directory with the SHA-256 of its files (FINAL_CHECKSUMS),
    renamed into place once fully written (over one left by an earlier session of this run)."""
    with publish_dir(path, replace=True) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / FINAL_CHECKSUMS, checksums(tmp, sorted(p.name for p in tmp.iterdir())))


def verify_final(run_dir: Path, path: Path) -> None:
    """Fail in one line when the run's final checkpoint `path` does not match its checksums; one written
    before they were kept loads with a warning."""
    if not (path / FINAL_CHECKSUMS).is_file():
        warn(f"warning: {path} has no {FINAL_CHECKSUMS} (written by an older version); it cannot be verified")
        return
    try:
        expected = read_json(path / FINAL_CHECKSUMS)
    except ValueError:
        expected = None
    why = checksum_problem(path, expected)
    if why is not None:
        latest = Checkpoints(run_dir / CHECKPOINTS, {}, 0, 0).latest()
        results = run_dir.parent.parent
        fix = (
            f"remove {run_dir / 'record.json'}, then resume it from its kept checkpoint {latest.name}: "
            f"speckd-bench run --resume {run_dir.name} --results-dir {results}"
            if latest is not None
            else f"run it again: speckd-bench run --config {run_dir / CONFIG_FILE} --results-dir {results}"
        )
        raise UserError(f"run {run_dir.name}'s final checkpoint {path} is damaged ({why}); {fix}")


class InterruptFlag:
    requested = False


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what a scheduler (SLURM) sends before it preempts or times out a job."""


@contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Inside the block a first Ctrl-C (SIGINT) or SIGTERM only sets `requested`, so the training loop can
    finish its step, checkpoint and stop cleanly; a second one acts at once."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    caught = [sig for sig, handler in previous.items() if handler not in (signal.SIG_IGN, None)]

    def on_signal(signum: int, frame: Any) -> None:
        flag.requested = True
        for sig in caught:
            signal.signal(sig, previous[sig])

    for sig in caught:
        signal.signal(sig, on_signal)
    try:
        yield flag
    finally:
        for sig in caught:
            signal.signal(sig, previous[sig])
