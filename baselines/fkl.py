"""Word-level KD with forward KL on ground-truth responses (also registered as `kd`)."""

from speckd_bench.methods import Method, register_method

for _name in ("fkl", "kd"):
    register_method(
        Method(
            name=_name,
            description="forward KL(p_T || p_S) at every target token of the ground-truth responses",
            paper="Hinton et al. 2015; Kim & Rush 2016 (word-level KD)",
            defaults={"divergence": "fkl", "gate": "none"},
        )
    )
