"""Supervised fine-tuning on the ground-truth responses: the no-teacher reference point."""

from speckd_bench.api.method_config import MethodConfig
from speckd_bench.api.methods import Method, register_method

register_method(
    Method(
        name="sft",
        description="cross-entropy on ground-truth responses, no teacher",
        paper="standard supervised fine-tuning",
        config=MethodConfig,
    )
)
