"""The teacher's top-k log-probabilities on the training data, computed once and stored on disk, so
off-policy methods (the teacher sees the same ground-truth sequences every run) skip the teacher's
forward pass in every later run, method and seed.

It is an approximation and recorded as one: the k most likely tokens keep their exact log-probabilities
and the remaining mass is spread over the other tokens in the student's own proportions (so every
divergence stays finite and the tail only moves the student's total tail mass, not its shape); a SpecKD
top-k gate with k <= teacher_cache_k is exact. The file's metadata holds the SHA-256 of its tensors, checked
when it is loaded; a file that fails it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from speckd_bench.caches import building, cache_dir, digest, publish_file, sha256_of
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import IGNORE, Example, collate
from speckd_bench.errors import UserError
from speckd_bench.loss.objective import MicroBatch, TeacherLogits
from speckd_bench.models.loading import fingerprint, target_logits

FORMAT = "speckd-teacher-topk-v1"
CPU = torch.device("cpu")


@dataclass
class TeacherTopK:
    """Top-k teacher log-probabilities at N target rows."""

    values: torch.Tensor
    """[N, k] float32 log-probabilities, descending."""
    indices: torch.Tensor
    """[N, k] int64 token ids."""
    rest: torch.Tensor
    """[N] float32: log of the probability mass outside the top k."""

    def to(self, device: torch.device) -> TeacherTopK:
        return TeacherTopK(self.values.to(device), self.indices.to(device), self.rest.to(device))

    def logprobs(self, part: slice, vocab_size: int, student_logits: torch.Tensor) -> torch.Tensor:
        """Dense [n, vocab_size] log-probabilities of rows `part`: the top k exact; the remaining mass
        spread over the other tokens in proportion to the student's own probabilities there (the cache
        knows how much mass the teacher's tail holds, not its shape), each capped just below the k-th value so
        the teacher's top k stay its top k."""
        values, indices, rest = self.values[part], self.indices[part], self.rest[part]
        student = torch.log_softmax(student_logits.float(), dim=-1).scatter(-1, indices, -math.inf)
        tail = student - student.logsumexp(-1, keepdim=True) + rest[:, None]
        below_kth = torch.nextafter(values[:, -1:], torch.tensor(-math.inf, device=values.device))
        return torch.minimum(tail, below_kth).scatter_(-1, indices, values)


def _digest(ex: Example) -> str:
    return digest([ex.prompt_ids, ex.target_ids], length=24)


def top_k(logits: torch.Tensor, k: int) -> TeacherTopK:
    """TeacherTopK of float32 logits [N, V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    values, indices = logp.topk(min(k, logp.shape[-1]), dim=-1)
    rest = logp.scatter(-1, indices, -math.inf).logsumexp(-1)
    return TeacherTopK(values, indices, rest)


class TopKTable:
    """TeacherTopK rows of many examples, found by the examples' token ids."""

    def __init__(self, tensors: dict[str, torch.Tensor], keys: list[str]) -> None:
        self.values, self.indices, self.rest = tensors["values"], tensors["indices"], tensors["rest"]
        offsets = tensors["offsets"].tolist()
        self.rows = {key: (offsets[i], offsets[i + 1]) for i, key in enumerate(keys)}
        self.keys = keys
        self.offsets = tensors["offsets"]

    def lookup(self, examples: list[Example]) -> TeacherTopK:
        """Rows of these examples' target tokens, in collate's (row-major) order."""
        spans = [self.rows[_digest(ex)] for ex in examples]
        index = torch.cat([torch.arange(a, b) for a, b in spans])
        return TeacherTopK(self.values[index], self.indices[index].long(), self.rest[index])

    def top_mass(self) -> float:
        """Mean probability mass the top k hold: how good the approximation is."""
        return float((1 - self.rest.exp()).mean()) if self.rest.numel() else 1.0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "indices": self.indices, "rest": self.rest, "offsets": self.offsets}

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        tensors = self.tensors()
        sha256 = _tensors_sha256(tensors)
        metadata = {"format": FORMAT, "keys": json.dumps(self.keys), "sha256": sha256, **meta}
        publish_file(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> TopKTable:
        """The table in `path`; ValueError when the file is garbled or fails its checksum."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if "sha256" not in meta or _tensors_sha256(tensors) != meta["sha256"]:
            raise ValueError("its tensors do not match the checksum written with them")
        return cls(tensors, json.loads(meta["keys"]))


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    return sha256_of(tensors[name].contiguous().numpy().tobytes() for name in sorted(tensors))


def _problem(path: Path) -> str | None:
    """Why a cached table cannot be used (garbled, cut short, failed checksum), or None."""
    try:
        TopKTable.load(path)
    except (SafetensorError, ValueError, OSError, KeyError) as exc:
        return str(exc)[:120] or type(exc).__name__
    return None


@torch.no_grad()
def build_table(
    teacher: Any, examples: list[Example], pad_id: int, vocab_size: int, k: int, batch_size: int
) -> TopKTable:
    """One teacher pass over the unique examples, longest first; top-k rows stored per example."""
    device = next(teacher.parameters()).device
    unique = list({_digest(ex): ex for ex in examples}.items())
    order = sorted(range(len(unique)), key=lambda i: -len(unique[i][1].prompt_ids + unique[i][1].target_ids))
    parts: dict[int, TeacherTopK] = {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([unique[i][1] for i in idx], pad_id).to(device)
        with autocast:
            rows = top_k(target_logits(teacher, batch, vocab_size), k)
        counts = (batch.labels != IGNORE).sum(1).tolist()
        offset = 0
        for i, n in zip(idx, counts, strict=True):
            part = slice(offset, offset + n)
            parts[i] = TeacherTopK(rows.values[part], rows.indices[part], rows.rest[part]).to(
                torch.device("cpu")
            )
            offset += n
    ordered = [parts[i] for i in range(len(unique))]
    sizes = torch.tensor([0] + [p.rest.numel() for p in ordered])
    tensors = {
        "values": torch.cat([p.values for p in ordered]).float().contiguous(),
        "indices": torch.cat([p.indices for p in ordered]).int().contiguous(),
        "rest": torch.cat([p.rest for p in ordered]).float().contiguous(),
        "offsets": sizes.cumsum(0),
    }
    return TopKTable(tensors, [key for key, _ in unique])


def cache_identity(cfg: RunConfig, teacher: Any, task: str, vocab_size: int, examples: list[Example]) -> dict:
    """What the cached values depend on: the teacher and its weights, its dtype, k, the vocabulary and the
    exact token ids of every training sequence (so task, split, prompt format and max length are all
    covered)."""
    sequences = hashlib.sha256("".join(sorted(_digest(ex) for ex in examples)).encode()).hexdigest()
    return {
        "format": FORMAT,
        "teacher": cfg.model.teacher,
        "teacher_weights": fingerprint(teacher),
        "teacher_dtype": cfg.model.teacher_dtype,
        "task": task,
        "max_length": cfg.data.max_length,
        "vocab_size": vocab_size,
        "k": cfg.train.teacher_cache_k,
        "sequences": sequences,
    }


def applies(method: Any) -> bool:
    """Off-policy KD on ground-truth sequences: the only case where the teacher's input never changes."""
    return method.uses_teacher and method.policy is None


def check(cfg: RunConfig, method: Any) -> None:
    """A top-k gate wider than the cache would rank tokens the cache no longer tells apart (SpecKD's, or a
    control gate matched to it)."""
    m, t = cfg.method, cfg.train
    if not (t.teacher_cache and applies(method)):  # applies: a divergence method, whose config has a gate
        return
    topk_rule = m.gate == "speckd" or (m.gate in ("random", "confidence") and m.gate_match)
    if topk_rule and m.rule == "topk" and m.k > t.teacher_cache_k:
        raise UserError(
            f"method.k={m.k} is larger than train.teacher_cache_k={t.teacher_cache_k}, so the cached "
            f"teacher cannot rank its top {m.k}; set --set train.teacher_cache_k={m.k} or "
            "--set train.teacher_cache=false"
        )
    if m.gate == "confidence":
        raise UserError(
            "method.gate=confidence ranks tokens by the teacher's entropy, which the cached top-k teacher "
            "only approximates; set --set train.teacher_cache=false"
        )


class CachedTeacher:
    """A teacher source (loss.objective.TeacherSource) that reads the teacher's top-k rows of each
    micro-batch from a table instead of running the teacher."""

    def __init__(self, table: TopKTable, info: dict[str, Any] | None = None) -> None:
        self.table = table
        self.info = info or {}

    def logits(self, micro: MicroBatch, vocab: int) -> TeacherLogits:
        topk = self.table.lookup(micro.rows).to(micro.batch.input_ids.device)
        return lambda part, student: topk.logprobs(part, vocab, student)


def cached_teacher(
    cfg: RunConfig, teacher: Any, task: str, vocab_size: int, pad_id: int, examples: list[Example]
) -> CachedTeacher:
    """The cache of these training examples: loaded, or built with one teacher pass and stored."""
    identity = cache_identity(cfg, teacher, task, vocab_size, examples)
    path = cache_dir() / "teacher-topk" / f"{digest(identity)}.safetensors"
    t0 = time.perf_counter()
    k = cfg.train.teacher_cache_k
    with building(path, _problem) as hit:
        if hit:
            table = TopKTable.load(path)
        else:
            table = build_table(teacher, examples, pad_id, vocab_size, k, cfg.train.batch_size)
            table.save(path, {"identity": json.dumps(identity)})
    info = {
        "used": True,
        "k": k,
        "hit": hit,
        "seconds": time.perf_counter() - t0,
        "top_k_mass": table.top_mass(),
        "path": str(path.relative_to(cache_dir())),
    }
    return CachedTeacher(table, info)
