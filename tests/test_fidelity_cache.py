"""The teacher's fidelity logits kept on disk: the same scores as a fresh teacher pass, stored once per
teacher and rows, rebuilt when damaged; a run that keeps them records the same fidelity metrics."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from speckd_bench.caches import cache_dir
from speckd_bench.data.examples import Example
from speckd_bench.evaluation.fidelity import teacher_forced, teacher_logits
from speckd_bench.evaluation.fidelity_cache import stored_teacher_logits

EXAMPLES = [Example([0], [1], "a", ["r"]), Example([1], [0, 1, 1], "b", ["r"])]


class Bigram(torch.nn.Module):
    """Next-token logits from the current token alone, in bfloat16 (not fusable: logits from forward);
    counts its forward passes."""

    config = SimpleNamespace(logit_scale=1.0)

    def __init__(self, probs: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log().to(torch.bfloat16))
        self.passes = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        self.passes += 1
        return SimpleNamespace(logits=self.table[input_ids])


TEACHER_PROBS = [[0.4, 0.6], [0.8, 0.2]]
STUDENT = Bigram([[0.9, 0.1], [0.8, 0.2]]).float()


def _files() -> list:
    return sorted((cache_dir() / "teacher-logits").glob("*.safetensors"))


def test_stored_logits_score_as_a_fresh_pass_and_are_computed_once():
    teacher = Bigram(TEACHER_PROBS)
    fresh = teacher_forced(STUDENT, teacher, EXAMPLES, pad_id=0, vocab_size=2).corpus()
    passes = teacher.passes
    stored = stored_teacher_logits("t1", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    assert teacher.passes == passes + 1  # one scoring batch, computed and stored
    again = stored_teacher_logits("t1", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    assert teacher.passes == passes + 1  # read back, not recomputed
    assert [t.dtype for t in again] == [torch.bfloat16]
    assert torch.equal(again[0], teacher_logits(teacher, EXAMPLES, pad_id=0, vocab_size=2)[0])
    scored = teacher_forced(STUDENT, teacher, EXAMPLES, pad_id=0, vocab_size=2, cached=stored).corpus()
    assert scored == fresh
    with pytest.raises(IndexError):
        stored[1]


def test_another_teacher_or_other_rows_get_their_own_file():
    teacher = Bigram(TEACHER_PROBS)
    stored_teacher_logits("t2", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    stored_teacher_logits("t3", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    stored_teacher_logits("t2", teacher, EXAMPLES[:1], pad_id=0, vocab_size=2)
    identities = []
    for path in _files():
        with safe_open(str(path), framework="pt") as f:
            identities.append(json.loads(f.metadata()["identity"]))
    assert len({json.dumps(i, sort_keys=True) for i in identities}) == len(identities)
    assert {i["teacher"] for i in identities} >= {"t2", "t3"}
    assert all(i["kernels"]["threads"] == torch.get_num_threads() for i in identities)


def test_a_damaged_file_is_rebuilt_not_used():
    teacher = Bigram(TEACHER_PROBS)
    stored_teacher_logits("t4", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    before = set(_files())
    stored_teacher_logits("t5", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    (path,) = set(_files()) - before
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # a flipped bit in the last tensor's bytes
    path.write_bytes(bytes(data))
    passes = teacher.passes
    stored = stored_teacher_logits("t5", teacher, EXAMPLES, pad_id=0, vocab_size=2)
    assert teacher.passes == passes + 1
    assert torch.equal(stored[0], teacher_logits(teacher, EXAMPLES, pad_id=0, vocab_size=2)[0])
