"""Method plugins: a name, a description, the paper, config defaults, the loss (cross-entropy or a
divergence to the teacher) and the data policy (what the training sequences are).

Built-in methods live in speckd_bench/speckd.py (registered here) and the baselines/ package; others
come from the entry-point group `speckd_bench.methods` or a `--plugins DIR` of *.py files.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from speckd_bench.config import MethodConfig, RunConfig
from speckd_bench.data import Batch, Example, collate
from speckd_bench.errors import UserError
from speckd_bench.registry import Registry, import_file
from speckd_bench.tasks import TaskSpec


@dataclass
class PolicyContext:
    """What a data policy may use: the run's config and task, both models and the tokenizer."""

    cfg: RunConfig
    task: TaskSpec
    student: Any
    teacher: Any
    tokenizer: Any
    vocab_size: int
    device: torch.device
    seed: int
    """Seed of the policy's own random draws (recorded as seeds.policy)."""


class DataPolicy:
    """Where the training sequences come from. This base class is the ground-truth policy; subclasses
    override the hooks the train loop calls.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def prepare(self, examples: list[Example], total_steps: int) -> list[Example]:
        """Once before training: the examples the loop will batch (seqkd swaps in teacher responses)."""
        return examples

    def micro_batch(self, examples: list[Example], step: int) -> Batch:
        """The batch trained on for these examples at optimiser step `step` (1-based)."""
        return collate(examples, self.pad_id)

    def end_step(self, step: int) -> dict[str, Any]:
        """After the optimiser step: fields added to that step's log line."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Facts for the run record (cache use, generation time, final schedule state)."""
        return {}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)
    """`method.*` overrides applied before the user's config (keys without the `method.` prefix)."""
    uses_teacher: bool = True
    """The loss: True = divergence to the teacher's logits (+ optional gate); False = cross-entropy."""
    data_policy: str = "ground_truth"
    """Label of the training data (ground_truth, teacher_generated, on_policy_mix, ...) for records."""
    policy: Callable[[PolicyContext], DataPolicy] | None = None
    """Builds the data policy of a run; None = ground-truth responses."""


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    return METHODS.register(method.name, method, replace=True)


register_method(
    Method(
        name="speckd",
        description="SpecKD: divergence counted only where the teacher accepts the student's proposal",
        paper="Huang et al. 2025, arXiv 2510.24021",
        defaults={"gate": "speckd", "divergence": "fkl", "rule": "topk", "k": 5, "propose": "greedy"},
    )
)


def discover_methods(plugin_dirs: list[Path] | None = None) -> Registry[Method]:
    """Import the built-in baselines, entry points and *.py files of plugin dirs; return the registry."""
    import speckd_bench.baselines as builtin

    for info in pkgutil.iter_modules(builtin.__path__):
        importlib.import_module(f"{builtin.__name__}.{info.name}")
    for ep in entry_points(group="speckd_bench.methods"):
        ep.load()
    for directory in plugin_dirs or []:
        for path in sorted(Path(directory).glob("*.py")):
            import_file(path, "speckd_plugin")
    return METHODS


def check_method(method: Method, mcfg: MethodConfig) -> None:
    """Settings that contradict the method fail before anything loads."""
    if mcfg.gate != "none" and not method.uses_teacher:
        raise UserError(
            f"method.gate={mcfg.gate} needs a divergence to the teacher, but {method.name} trains with "
            "cross-entropy; gate a divergence method instead (e.g. --method fkl --set method.gate=speckd)"
        )


def method_defaults(name: str) -> dict[str, Any]:
    """The `method.*` overrides of a registered method (for config.build_config)."""
    return {f"method.{key}": value for key, value in METHODS.get(name).defaults.items()}
