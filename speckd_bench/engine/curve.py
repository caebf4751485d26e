"""The learning curve of a run's training stage: every train.curve_every optimiser steps, and before the
first, the student is scored teacher-forced on a fixed subset of the eval set (the first train.curve_rows
rows; forward passes only, no generation) and one JSON line per point goes to curve.jsonl: {"step": s,
"tf_fkl", "tf_rkl", "tf_tvd", "tf_top1", "seconds"}, each metric pooled over the subset's target tokens as
the final fidelity metrics are. Scoring runs in no_grad between steps, so the weights
and the training log are those of a run without a curve. The teacher's logits of the subset are computed
at the first point and kept (exact, in the teacher's dtype), so later points run the student only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speckd_bench.caches import atomic_write_jsonl
from speckd_bench.distributed import process_context
from speckd_bench.evaluation.fidelity import PER_TOKEN, teacher_forced, teacher_logits
from speckd_bench.jsonl import read_jsonl

CURVE_FILE = "curve.jsonl"


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The points of a run's curve.jsonl, in step order ([] when there is none)."""
    return read_jsonl(path, appended=True) if path.is_file() else []


@dataclass
class LearningCurve:
    """Scores `student` against `teacher` on `examples` at step 0 and every `every` steps, and at `last`."""

    path: Path
    student: Any
    teacher: Any
    examples: list[Any]
    pad_id: int
    vocab_size: int
    every: int
    last: int
    teacher_side: list[torch.Tensor] | None = field(default=None, repr=False)
    """The teacher's logits of `examples` (fidelity.teacher_logits), from the first point on."""

    def start(self, done_steps: int) -> None:
        """Keep the points of steps a resumed run has done (drop later ones, written after its newest
        checkpoint); score step 0 when there is none yet."""
        kept = [p for p in read_curve(self.path) if p["step"] <= done_steps]
        if process_context().is_main:
            atomic_write_jsonl(self.path, kept)
        if not kept:
            self.point(0)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last

    def point(self, step: int) -> dict[str, float]:
        """Score the student now as the point of `step`, and append it to the curve."""
        t0 = time.perf_counter()
        if self.teacher_side is None:
            self.teacher_side = teacher_logits(self.teacher, self.examples, self.pad_id, self.vocab_size)
        scored = teacher_forced(
            self.student, self.teacher, self.examples, self.pad_id, self.vocab_size, self.teacher_side
        )
        pooled = scored.corpus()
        row = {"step": step, **{name: pooled[name] for name in PER_TOKEN}}
        row["seconds"] = time.perf_counter() - t0
        if process_context().is_main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return row
