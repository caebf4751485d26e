"""Word-level KD baselines on ground-truth responses: one divergence to the teacher at every target token.

Each is also gateable: `--method rkl --set method.gate=speckd` is SpecKD over reverse KL.
"""

from speckd_bench.api.methods import Method, register_method

# name: (divergence, defaults beyond the divergence, description, paper)
FAMILY = {
    "fkl": ("fkl", {}, "forward KL(p_T || p_S)", "Hinton et al. 2015; Kim & Rush 2016 (word-level KD)"),
    "kd": ("fkl", {}, "alias of fkl: forward KL(p_T || p_S)", "Hinton et al. 2015"),
    "rkl": (
        "rkl",
        {},
        "reverse KL(p_S || p_T), mode-seeking",
        "Gu et al. 2024 (MiniLLM), token-level variant",
    ),
    "jsd": (
        "jsd",
        {"beta": 0.5},
        "generalised JSD, TRL convention (beta 0 = fkl, 1 = rkl)",
        "Agarwal et al. 2024 (GKD) divergence, off-policy",
    ),
    "tvd": ("tvd", {}, "total variation distance", "Wen et al. 2023 (f-divergence KD)"),
    "sfkl": (
        "sfkl",
        {"alpha": 0.1},
        "skew forward KL(p_T || a p_T + (1-a) p_S)",
        "Ko et al. 2024 (DistiLLM)",
    ),
    "srkl": (
        "srkl",
        {"alpha": 0.1},
        "skew reverse KL(p_S || a p_S + (1-a) p_T)",
        "Ko et al. 2024 (DistiLLM)",
    ),
    "akl": ("akl", {"mu": 0.5}, "adaptive KL: fkl/rkl weighted by head/tail gaps", "Wu et al. 2024 (AKL)"),
}

for _name, (_div, _extra, _desc, _paper) in FAMILY.items():
    register_method(
        Method(
            name=_name,
            description=f"{_desc} at every target token of the ground-truth responses",
            paper=_paper,
            defaults={"divergence": _div, **_extra},
        )
    )
