"""The teacher's side of the fidelity metrics, kept on disk (eval.keep_teacher_logits): every run of a
protocol scores its student against the same teacher pass over the same teacher-forced rows, so the first
run stores the teacher's target logits and later runs run the student only.

Exact, not an approximation: the logits are stored as fidelity.teacher_logits returns them (a bfloat16
teacher's in bfloat16, which holds them exactly), one tensor per scoring batch, and the key covers all
that can change a bit of them: the teacher's weights and dtype, the exact examples, the code that batches
and computes them, and the kernels (torch version, device, CPU capability and thread count). The file's
metadata holds the SHA-256 of its tensors, checked before it is used; a file that fails is rebuilt.
A single-process run only: a multi-process run's teacher may be sharded, so its processes compute the
teacher's side together, as without the cache.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from speckd_bench.caches import building, cache_dir, digest, publish_file, sha256_of
from speckd_bench.data.examples import Example, examples_digest
from speckd_bench.evaluation import fidelity
from speckd_bench.models import loading

FORMAT = "speckd-teacher-logits-v1"


def _name(index: int) -> str:
    return f"batch_{index:05d}"


def _bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (numpy has no bfloat16)."""
    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


class StoredLogits(Sequence[torch.Tensor]):
    """The teacher's logits of each scoring batch, read from the file one batch at a time (memory-mapped),
    so a 500-row eval set never sits in memory whole."""

    def __init__(self, path: Path, batches: int) -> None:
        self.path = path
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        if not 0 <= index < self.batches:
            raise IndexError(index)
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(_name(index))


def _stored(path: Path) -> StoredLogits:
    """The logits in `path`; ValueError when the file is not one or fails its checksum."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or "sha256" not in meta:
            raise ValueError("not a teacher-logits file")
        batches = int(meta["batches"])
        checksum = sha256_of(_bytes(f.get_tensor(_name(i))) for i in range(batches))
    if checksum != meta["sha256"]:
        raise ValueError("its tensors do not match the checksum written with them")
    return StoredLogits(path, batches)


def _problem(path: Path) -> str | None:
    """Why a stored file cannot be used (garbled, cut short, failed checksum), or None."""
    try:
        _stored(path)
    except (SafetensorError, ValueError, OSError, KeyError) as exc:
        return str(exc)[:120] or type(exc).__name__
    return None


@functools.cache
def _code() -> str:
    """The code that batches the examples and computes the teacher's target logits."""
    return digest([inspect.getsource(fidelity), inspect.getsource(loading)])


def kernels(device: torch.device) -> dict[str, Any]:
    """What decides the low bits of a forward pass besides the weights and inputs."""
    return {
        "torch": torch.__version__,
        "device": device.type,
        "capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else "",
        "threads": torch.get_num_threads(),
    }


def stored_teacher_logits(
    teacher_identity: Any, teacher: Any, examples: list[Example], pad_id: int, vocab_size: int
) -> StoredLogits:
    """The teacher's fidelity.teacher_logits of `examples`, from the cache or computed now and stored.
    `teacher_identity`: what names the teacher's weights and dtype (result_keys.eval_identity's)."""
    device = next(teacher.parameters()).device
    identity = {
        "teacher": teacher_identity,
        "examples": examples_digest(examples),
        "vocab_size": vocab_size,
        "pad_id": pad_id,
        "code": _code(),
        "kernels": kernels(device),
    }
    path = cache_dir() / "teacher-logits" / f"{digest(identity)}.safetensors"
    with building(path, _problem, collective=False) as hit:
        if not hit:
            logits = fidelity.teacher_logits(teacher, examples, pad_id, vocab_size)
            tensors = {_name(i): t.cpu().contiguous() for i, t in enumerate(logits)}
            metadata = {
                "format": FORMAT,
                "batches": str(len(logits)),
                "sha256": sha256_of(_bytes(tensors[_name(i)]) for i in range(len(logits))),
                "identity": json.dumps(identity),
            }
            publish_file(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return _stored(path)
