"""Method plugins: a name, a description, the paper, its own config class (method_config.py) with
defaults, the loss that class implies (cross-entropy, or a divergence to the teacher for KDConfig) and the
data policy (what the training sequences are).

Built-in methods live in speckd_bench/methods/speckd.py and the baselines/ package, each registering itself;
others come from the entry-point group `speckd_bench.methods` or a `--plugins DIR` of *.py files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import Batch, Example, collate
from speckd_bench.data.tasks import TaskSpec
from speckd_bench.errors import UserError
from speckd_bench.registry import NAME, Registry


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
    config: type[MethodConfig] = KDConfig
    """The method's settings (`method.*`). A KDConfig (sub)class means a divergence to the teacher's
    logits (+ SpecKD's gate when on) is the loss; any other MethodConfig means cross-entropy."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Defaults on top of the config class's own (keys without the `method.` prefix), for methods that
    share a class, such as the divergence family."""
    data_policy: str = "ground_truth"
    """Label of the training data (ground_truth, teacher_generated, on_policy_mix, ...) for records."""
    policy: Callable[[PolicyContext], DataPolicy] | None = None
    """Builds the data policy of a run; None = ground-truth responses."""

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss is a divergence to the teacher's logits (else cross-entropy)."""
        return issubclass(self.config, KDConfig)


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    if not NAME.fullmatch(method.name):
        raise UserError(f"method name {method.name!r} is not allowed: use a-z, 0-9, _ and -")
    return METHODS.register(method.name, method, replace=True)
