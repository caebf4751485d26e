"""Files the harness writes: the cache directory, cache keys (a digest of everything a cached entry's
content depends on), and atomic publishing, so a reader never sees a half-written file or directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from speckd_bench.data import Example
from speckd_bench.tasks import TaskSpec


def cache_dir() -> Path:
    """$SPECKD_CACHE_DIR, else the user's cache dir (~/.cache/speckd-bench)."""
    env = os.environ.get("SPECKD_CACHE_DIR")
    base = (
        Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "speckd-bench"
    )
    base.mkdir(parents=True, exist_ok=True)
    return base


def digest(obj: Any, length: int = 16) -> str:
    """`length` hex digits of the SHA-256 of obj as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@contextmanager
def publish_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `target`; when the block ends without error its files are
    fsynced and it is renamed to `target`, else it is removed. An existing `target` is replaced when
    `replace`, else kept (another process published the same entry first) and the new copy dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync(path)
        if replace and target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_file(target: Path, write: Any) -> None:
    """`write(tmp_path)` into a temp file beside `target`, then rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
