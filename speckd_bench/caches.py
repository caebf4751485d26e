"""Cache keys: a short digest of everything a cached file's content depends on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from speckd_bench.data import Example
from speckd_bench.tasks import TaskSpec


def digest(obj: Any) -> str:
    """16 hex digits of the SHA-256 of obj as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def examples_digest(examples: list[Example]) -> str:
    """The exact token ids and references of a list of examples, in order: covers the data file, the
    rows taken, the prompt template and format, the tokenizer and every length limit at once."""
    return digest([[e.prompt_ids, e.target_ids, e.references] for e in examples])


def task_digest(task: TaskSpec) -> str:
    """The task file and its hook: a changed extraction or metric list changes cached scores."""
    files = [Path(task.path)] if task.path else []
    if task.hook and task.path:
        files.append(Path(task.path).parent / task.hook)
    return digest([f.read_text(encoding="utf-8") for f in files if f.is_file()] + list(task.metrics))
