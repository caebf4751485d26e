"""The teacher's reference decode: in its own dtype or a float32 copy (eval.reference_dtype), and the
choice is part of the cached answers' key."""

import torch
from tiny_models import tiny_llama

from speckd_bench.config.result_keys import eval_identity
from speckd_bench.config.run_config import RunConfig
from speckd_bench.evaluation.reference import reference_teacher


def test_a_float32_reference_decode_uses_a_float32_copy_and_leaves_the_teacher_alone():
    teacher = tiny_llama(0).to(torch.bfloat16)
    decoder = reference_teacher(teacher, "float32")
    assert decoder is not teacher and next(decoder.parameters()).dtype == torch.float32
    assert next(teacher.parameters()).dtype == torch.bfloat16
    assert reference_teacher(teacher, "teacher") is teacher
    already = tiny_llama(0)
    assert reference_teacher(already, "float32") is already


def test_the_reference_dtype_is_part_of_the_teacher_key():
    models = {"teacher_fingerprint": "f"}
    own, copied = RunConfig(), RunConfig()
    copied.eval.reference_dtype = "float32"
    assert eval_identity(own, models) != eval_identity(copied, models)
