"""The shared starting point (MiniLLM's 'init' stage): a short SFT of the student, done once per
(teacher, student recipe, task, seed, data and budget), cached on disk and reused by every method; plus
cached scores of the raw and init students, so a comparison pays for them once. An entry's meta.json holds
the SHA-256 of its weights and log; one that fails them (or whose meta.json is garbled) is rebuilt.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from speckd_bench.api.methods import METHODS
from speckd_bench.caches import (
    atomic_write_json,
    building,
    cache_dir,
    checksum_problem,
    checksums,
    digest,
    discard_broken,
    publish_dir,
    read_json,
)
from speckd_bench.config.result_keys import eval_identity
from speckd_bench.config.run_config import RunConfig, TrainConfig
from speckd_bench.data.examples import Example, examples_digest
from speckd_bench.distributed import process_context
from speckd_bench.engine.trainer import Stage, lr_schedule, plan_steps
from speckd_bench.evaluation.evaluate import EvalSet
from speckd_bench.evaluation.reference import scored_identity
from speckd_bench.methods.discovery import method_config


def init_rows(cfg: RunConfig, available: int) -> int:
    """Training rows of the warm start: train.init_rows, else the KD stage's data.max_train_examples."""
    return min(available, cfg.train.init_rows or cfg.data.max_train_examples)


def init_train_config(cfg: RunConfig) -> TrainConfig:
    """The warm start's own training settings: the KD stage's optimiser settings, but never its step
    budget (train.max_steps belongs to the KD stage, so a probe with max_steps=1 shares the real init)
    nor its CPU autocast (the init is trained in float32 on a CPU)."""
    return dataclasses.replace(cfg.train, max_steps=0, cpu_bf16_autocast=False)


def init_stage(cfg: RunConfig) -> Stage:
    """The warm start as a training stage: SFT with its own settings, learning rate, epochs and seed."""
    t = init_train_config(cfg)
    sft = METHODS.get("sft")
    return Stage(sft, method_config("sft")[0], t, t.init_lr, t.init_sft_epochs, t.init_seed, "init SFT")


def init_plan(cfg: RunConfig, n_rows: int) -> dict[str, Any]:
    """The resolved SFT plan: what a reader needs to know about the init, and part of its identity."""
    t = init_train_config(cfg)
    world = process_context().world
    steps = plan_steps(n_rows, t, t.init_sft_epochs, world)
    return {
        "steps": steps,
        "rows": n_rows,
        "epochs": t.init_sft_epochs,
        "lr": t.init_lr,
        "batch_size": t.batch_size * world,  # the global micro-batch: 2 x 2 shares 1 x 4's init
        "grad_accum": t.grad_accum,
        "seed": t.init_seed,
        "weight_decay": t.weight_decay,
        "warmup_ratio": t.warmup_ratio,
        "scheduler": t.scheduler,
        "max_grad_norm": t.max_grad_norm,
        "lr_schedule": digest(lr_schedule(t, steps)),  # the multipliers the code applies, not their name
    }


def init_identity(cfg: RunConfig, examples: list[Example], models: dict[str, Any]) -> dict[str, Any]:
    """Everything the init checkpoint depends on: the models and the raw student's weights (the teacher's
    dtype never touches the student, which is copied from the teacher in float32), the exact training
    sequences and the plan. `models`: the record's models part (load_pair's info)."""
    model = {k: v for k, v in asdict(cfg.model).items() if k != "teacher_dtype"}
    return {
        "model": model,
        "student_weights": models["student_fingerprint"],
        "task": cfg.task,
        "examples": examples_digest(examples),
        "plan": init_plan(cfg, len(examples)),
    }


class WarmStart:
    def __init__(self, cfg: RunConfig, examples: list[Example], models: dict[str, Any]) -> None:
        self.identity = init_identity(cfg, examples, models)
        self.plan = self.identity["plan"]
        self.key = digest(self.identity)
        self.dir = cache_dir() / "init" / self.key
        self._eval_settings = eval_identity(cfg, models)

    def eval_key(self, es: EvalSet) -> str:
        """Key of a cached score of this init (or of the raw student) on one eval set."""
        return digest({"init": self.key, "eval": self._eval_settings, **scored_identity(es)})

    @property
    def weights(self) -> Path:
        return self.dir / "student.safetensors"

    @contextmanager
    def building(self) -> Iterator[bool]:
        """Whether a good entry is there to load (a broken one is removed first); the block loads it, or
        trains and saves one while holding the entry's lock, so a second run waits and reuses it."""
        with building(self.dir, self.problem) as ready:
            yield ready

    def problem(self, folder: Path) -> str | None:
        """Why the entry in `folder` cannot be trusted, or None."""
        try:
            meta = read_json(folder / "meta.json")
        except ValueError as exc:
            return str(exc)
        if not isinstance(meta, dict) or meta.get("identity") != self.identity or "seconds" not in meta:
            return "meta.json is not this entry's"
        return checksum_problem(folder, meta.get("sha256"))

    def load_into(self, student: Any) -> None:
        load_model(student, str(self.weights), device=str(next(student.parameters()).device))

    def save(self, student: Any, train_log: Path, meta: dict[str, Any]) -> None:
        """Write weights, log and meta into a temp dir, then rename it into place (the main process; the
        others wait until it is there)."""
        dist = process_context()
        if dist.is_main:
            self._write(student, train_log, meta)
        dist.barrier()

    def _write(self, student: Any, train_log: Path, meta: dict[str, Any]) -> None:
        with publish_dir(self.dir) as tmp:  # a concurrent run may publish the same entry first
            save_model(student, str(tmp / "student.safetensors"))
            shutil.copy(train_log, tmp / "train_log.jsonl")
            sha256 = checksums(tmp, ["student.safetensors", "train_log.jsonl"])
            atomic_write_json(tmp / "meta.json", {"identity": self.identity, **meta, "sha256": sha256})

    def meta(self) -> dict[str, Any]:
        return read_json(self.dir / "meta.json")

    def _eval_path(self, stage: str, key: str) -> Path:
        return self.dir / f"eval-{stage}-{key}.json"

    def cached_eval(self, stage: str, key: str) -> dict[str, Any] | None:
        """A cached score; None when there is none (a garbled one is removed, so it is scored again)."""
        path = self._eval_path(stage, key)
        if not path.is_file():
            return None
        try:
            summary = read_json(path)
        except ValueError as exc:
            summary = str(exc)
        if isinstance(summary, dict) and isinstance(summary.get("metrics"), dict):
            return summary
        discard_broken(path, summary if isinstance(summary, str) else "not a score summary")
        return None

    def store_eval(self, stage: str, key: str, summary: dict[str, Any]) -> None:
        if self.dir.is_dir() and process_context().is_main:
            atomic_write_json(self._eval_path(stage, key), summary)
