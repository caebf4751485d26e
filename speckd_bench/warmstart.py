"""The shared starting point (MiniLLM's 'init' stage): a short SFT of the student, done once per
(teacher, student recipe, task, seed, data and budget), cached on disk and reused by every method; plus
cached scores of the raw and init students, so a comparison pays for them once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from speckd_bench.config import NON_RESULT_KEYS, RunConfig
from speckd_bench.distributed import process_context
from speckd_bench.models import cache_dir
from speckd_bench.results import atomic_write_json


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def init_identity(cfg: RunConfig) -> dict[str, Any]:
    """Everything the init checkpoint depends on."""
    t = cfg.train
    world = process_context().world
    return {
        "model": asdict(cfg.model),
        "task": cfg.task,
        "seed": cfg.seed,
        "data": {k: v for k, v in asdict(cfg.data).items() if k not in ("data_dir", "max_eval_examples")},
        "sft": {
            "epochs": t.init_sft_epochs,
            "lr": t.init_lr,
            "batch_size": t.batch_size * world,  # the global micro-batch: 2 x 2 shares 1 x 4's init
            "grad_accum": t.grad_accum,
            "weight_decay": t.weight_decay,
            "warmup_ratio": t.warmup_ratio,
            "scheduler": t.scheduler,
            "max_grad_norm": t.max_grad_norm,
        },
    }


class WarmStart:
    def __init__(self, cfg: RunConfig) -> None:
        self.identity = init_identity(cfg)
        self.key = _digest(self.identity)
        self.dir = cache_dir() / "init" / self.key
        eval_settings = {k: v for k, v in asdict(cfg.eval).items() if f"eval.{k}" not in NON_RESULT_KEYS}
        self._eval_key = _digest(
            {"init": self.key, "eval": eval_settings, "n": cfg.data.max_eval_examples, "task": cfg.task}
        )

    @property
    def weights(self) -> Path:
        return self.dir / "student.safetensors"

    def exists(self) -> bool:
        return self.weights.is_file()

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
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.dir.parent, prefix=f".{self.key}-"))
        save_model(student, str(tmp / "student.safetensors"))
        shutil.copy(train_log, tmp / "train_log.jsonl")
        atomic_write_json(tmp / "meta.json", {"identity": self.identity, **meta})
        try:
            tmp.rename(self.dir)
        except OSError:  # a concurrent run saved the same checkpoint first
            shutil.rmtree(tmp, ignore_errors=True)

    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def _eval_path(self, which: str) -> Path:
        return self.dir / f"eval-{which}-{self._eval_key}.json"

    def cached_eval(self, which: str) -> dict[str, Any] | None:
        path = self._eval_path(which)
        return json.loads(path.read_text()) if path.is_file() else None

    def store_eval(self, which: str, summary: dict[str, Any]) -> None:
        if self.dir.is_dir() and process_context().is_main:
            atomic_write_json(self._eval_path(which), summary)
