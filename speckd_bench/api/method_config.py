"""Settings a method is configured with (`method.*`). Every method declares its own dataclass next to its
code, extending one of these: MethodConfig (the name only: cross-entropy methods), KDConfig (a divergence
to the teacher, optionally gated by SpecKD's acceptance test or a control gate), and the blocks for methods
that generate responses while training. `--set method.KEY=VALUE` is checked against the chosen method's own
fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from speckd_bench.api.settings import finite, setting
from speckd_bench.errors import UserError

_UNIT = finite(0.0, 1.0)
_POSITIVE = finite(0.0, open_low=True)


@dataclass
class MethodConfig:
    name: str = setting("speckd", "the method (`speckd-bench methods` lists them)")


@dataclass
class KDConfig(MethodConfig):
    divergence: str = setting("fkl", "per-token divergence to the teacher (`speckd-bench methods`)")
    temperature: float = setting(
        1.0,
        "softmax temperature of both models in the divergence",
        check=_POSITIVE,
        expected="temperature > 0, finite",
    )
    beta: float = setting(
        0.5,
        "jsd mixing weight, TRL convention: 0 -> forward KL limit, 1 -> reverse KL limit",
        check=_UNIT,
        expected="beta in [0, 1]",
    )
    alpha: float = setting(0.1, "skew of sfkl / srkl", check=_UNIT, expected="alpha in [0, 1]")
    mu: float = setting(
        0.5, "head mass threshold of akl", check=finite(0.0, 1.0, open_low=True), expected="mu in (0, 1]"
    )
    gate: str = setting(
        "none",
        "none | speckd: SpecKD's acceptance test gates the divergence | random, confidence: control gates "
        "keeping random tokens, or those of lowest teacher entropy (gate_rate, gate_match)",
        choices=("none", "speckd", "random", "confidence"),
    )
    gate_rate: float = setting(
        0.5,
        "share of a micro-batch's target tokens the random and confidence gates accept (without gate_match)",
        check=finite(0.0, 1.0, open_low=True),
        expected="gate_rate in (0, 1]",
    )
    gate_match: bool = setting(
        False,
        "random and confidence gates accept, per micro-batch, as many tokens as SpecKD's rule (rule, k, tau, "
        "propose) accepts on the same tokens, instead of gate_rate of them",
    )
    rule: str = setting(
        "topk", "how the teacher verifies the student's proposal", choices=("topk", "spec", "prob")
    )
    k: int = setting(5, "teacher top-k of rule=topk", check=lambda v: v >= 1, expected="k >= 1")
    tau: float = setting(
        0.1, "teacher probability threshold of rule=prob", check=_UNIT, expected="tau in [0, 1]"
    )
    propose: str = setting(
        "greedy",
        "the student's proposal at each position: its argmax, or a sample at gen_temperature",
        choices=("greedy", "sample"),
    )
    reject_weight: float = setting(
        0.0,
        "gate weight of rejected tokens: 0 masks them, small values (0.01) down-weight them",
        check=_UNIT,
        expected="reject_weight in [0, 1]",
    )
    normalize: str = setting(
        "all",
        "the loss denominator of an optimiser step: all target tokens, or the accepted ones",
        choices=("all", "accepted"),
    )
    gen_temperature: float = setting(
        1.0,
        "the student's sampling temperature: rollouts, SpecKD's sampled proposals and its spec/prob test",
        check=_POSITIVE,
        expected="gen_temperature > 0, finite",
    )


@dataclass
class RolloutLengthConfig:
    gen_max_new_tokens: int = setting(
        0,
        "response tokens of a rollout; 0 = the room the prompt leaves (data.max_length - max_prompt_length)",
        check=lambda v: v >= 0,
        expected="gen_max_new_tokens >= 0 (0 = fill max_length)",
    )


@dataclass
class StudentRolloutConfig(KDConfig, RolloutLengthConfig):
    """A KD method that trains on responses the student samples during training."""

    gen_top_p: float = setting(
        1.0, "nucleus of the student's rollouts", check=finite(0.0, 1.0, open_low=True), expected="(0, 1]"
    )


@dataclass
class TeacherSamplingConfig(RolloutLengthConfig):
    """A method that samples responses from the teacher."""

    teacher_temperature: float = setting(
        1.0, "the teacher's sampling temperature", check=_POSITIVE, expected="teacher_temperature > 0, finite"
    )
    teacher_top_p: float = setting(
        1.0, "nucleus of the teacher's samples", check=finite(0.0, 1.0, open_low=True), expected="(0, 1]"
    )


def check_vocabulary(mcfg: MethodConfig, vocab_size: int) -> None:
    """Settings bounded by the models' shared vocabulary, checked once the models are loaded."""
    if isinstance(mcfg, KDConfig) and mcfg.k > vocab_size:
        raise UserError(
            f"method.k={mcfg.k} exceeds the vocabulary of {vocab_size} tokens the models share; "
            f"use --set method.k=N with N <= {vocab_size}"
        )
