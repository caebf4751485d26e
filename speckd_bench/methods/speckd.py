"""SpecKD (Huang, Song, Zhang, Ren 2025, arXiv 2510.24021; its second version is titled SelecTKD): the
student proposes a token at each position, the teacher verifies it, and the KD loss counts fully at
accepted positions and with `reject_weight` at rejected ones. The paper's greedy Top-k variant is
`rule=topk` (the proposal must be among the teacher's top k), its non-greedy Spec-k variant `rule=spec`
(accepted with probability min(1, p_T/p_S)); the second version defaults to k = 5 and a reject weight of
0.01. The gate itself lives in loss/gate.py, since any divergence method can be gated
(`--method rkl --set method.gate=speckd`), and so can its control gates (`method.gate=random|confidence`).
"""

from __future__ import annotations

from dataclasses import dataclass

from speckd_bench.api.method_config import KDConfig
from speckd_bench.api.methods import Method, register_method


@dataclass
class SpecKDConfig(KDConfig):
    gate: str = "speckd"


register_method(
    Method(
        name="speckd",
        description="SpecKD: divergence counted only where the teacher accepts the student's proposal",
        paper="Huang et al. 2025, arXiv 2510.24021 (v2: SelecTKD)",
        config=SpecKDConfig,
    )
)
