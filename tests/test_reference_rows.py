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


def test_the_token_floors_fidelity_is_cached_per_teacher_key_and_training_examples(monkeypatch):
    """The floors' teacher pass over every fidelity row runs once per key, not once per run."""
    from types import SimpleNamespace

    from speckd_bench.data.examples import Example
    from speckd_bench.evaluation import reference

    calls = []
    monkeypatch.setattr(
        reference,
        "build_examples",
        lambda task, rows, tok, data: [Example([1], [r, 3], "p", ["r"]) for r in rows],
    )

    def fidelity(floors, teacher, examples, pad_id, vocab_size):
        calls.append(len(examples))
        return {"unigram_tokens": {"output": "<unigram>", "metrics": {"tf_top1": 12.5}}}

    monkeypatch.setattr(reference, "token_floor_fidelity", fidelity)
    es = SimpleNamespace(name="dolly", task=None, forced=[Example([1], [2], "p", ["r"])] * 3)
    pair = SimpleNamespace(vocab_size=40, tokenizer=SimpleNamespace(pad_token_id=0), teacher=None)
    first = reference._token_floors(RunConfig(), pair, es, [4, 5], "teacher-key")
    again = reference._token_floors(RunConfig(), pair, es, [4, 5], "teacher-key")
    assert first == again == {"unigram_tokens": {"output": "<unigram>", "metrics": {"tf_top1": 12.5}}}
    assert calls == [3]
    reference._token_floors(RunConfig(), pair, es, [4, 5], "another-teacher-key")
    reference._token_floors(RunConfig(), pair, es, [4, 6], "teacher-key")  # other training responses
    assert calls == [3, 3, 3]
