"""What the stages of a run (recipe.py) hand each other: `Setup` from setup to every later stage, `Before`
(the student before training, completed by score_before and warm_start), `Trained` from train to finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speckd_bench.api.methods import DataPolicy, Method
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import Example
from speckd_bench.data.tasks import TaskSpec
from speckd_bench.engine.run_state import Checkpoints, RunState
from speckd_bench.engine.scoring import EvalSets, Scoring
from speckd_bench.engine.tracking import Tracking
from speckd_bench.engine.trainer import TrainResult
from speckd_bench.engine.warmstart import WarmStart
from speckd_bench.loss.objective import TeacherSource
from speckd_bench.models.loading import ModelPair

TRAIN_LOG = "train_log.jsonl"
FINAL_CHECKPOINT = "checkpoint"


@dataclass
class Setup:
    """What setup hands the later stages: the run's task and method, its examples, models and scoring,
    its warm start, its open run folder and its trackers."""

    task: TaskSpec
    method: Method
    train_file: str
    """Where the training rows came from."""
    train_ex: list[Example]
    init_ex: list[Example]
    """The warm start's training examples (the KD stage's, or the first train.init_rows rows)."""
    eval: EvalSets
    pair: ModelPair
    state: RunState
    checkpoints: Checkpoints
    wall_before: float
    """Wall time of the run's earlier (interrupted) sessions."""
    scoring: Scoring
    warm: WarmStart
    score_keys: dict[str, str]
    """Per eval set, the key of its cached raw and init scores beside the warm start."""
    tracker: Tracking

    @property
    def run_id(self) -> str:
        return self.state.dir.name

    @property
    def log_path(self) -> Path:
        return self.state.dir / TRAIN_LOG


@dataclass
class Before:
    """The student before training, kept in the run's state (a resumed run starts from what its earlier
    sessions stored): per eval set the summaries of the raw and init students, and the warm start's facts."""

    scores: dict[str, dict[str, Any]]
    init: dict[str, Any]

    @classmethod
    def of_run(cls, cfg: RunConfig, setup: Setup) -> Before:
        state = setup.state
        return cls(
            state.get("before", {name: {} for name in setup.eval.names}),
            state.get("init", {"enabled": cfg.train.init_sft_epochs > 0}),
        )


@dataclass
class Trained:
    """The training stage's product: its result, and the data policy and teacher source it trained with
    (none when a resumed run had finished training)."""

    result: TrainResult
    policy: DataPolicy | None = None
    teacher: TeacherSource | None = None
