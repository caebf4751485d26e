"""SpecKD (Huang et al. 2025, arXiv 2510.24021): the student proposes a token at each position, the teacher
verifies it, and the KD loss counts fully at accepted positions and with `reject_weight` at rejected
ones. The gate itself lives in loss/gate.py, since any divergence method can be gated
(`--method rkl --set method.gate=speckd`)."""

from __future__ import annotations

from dataclasses import dataclass

from speckd_bench.api.method_config import KDConfig
from speckd_bench.api.methods import Method, register_method
from speckd_bench.api.settings import setting


@dataclass
class SpecKDConfig(KDConfig):
    gate: str = setting(
        "speckd", "none | speckd: SpecKD's acceptance test gates the divergence", choices=("none", "speckd")
    )


register_method(
    Method(
        name="speckd",
        description="SpecKD: divergence counted only where the teacher accepts the student's proposal",
        paper="Huang et al. 2025, arXiv 2510.24021",
        config=SpecKDConfig,
    )
)
