"""The teacher's reference answers: cached per teacher score key (teacher, dtype, eval settings, exact
examples, scoring code), and committed beside a leaderboard as results/teacher/<set>-<key>.jsonl, one line
per prompt and eval seed ({"eval_seed", "index", "output"}). A later decode under the same key (another
machine, an emptied cache) is compared with the committed answers, so a leaderboard says when its
reference rows did not reproduce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speckd_bench.caches import atomic_write_jsonl, cache_dir, read_json
from speckd_bench.jsonl import read_jsonl

ANSWERS_DIR = "teacher"


def entry_path(eval_set: str, key: str) -> Path:
    """The cache entry of the teacher's scores and answers on one eval set."""
    return cache_dir() / "teacher-eval" / f"{eval_set}-{key}.json"


def answers_path(results_dir: Path, eval_set: str, key: str) -> Path:
    """Where a leaderboard keeps the teacher's answers of one eval set."""
    return results_dir / ANSWERS_DIR / f"{eval_set}-{key}.jsonl"


def answer_rows(outputs: dict[str, list[str]]) -> list[dict[str, Any]]:
    """{eval seed: answers} as the committed file's rows."""
    return [
        {"eval_seed": int(seed), "index": i, "output": text}
        for seed, texts in sorted(outputs.items(), key=lambda kv: int(kv[0]))
        for i, text in enumerate(texts)
    ]


def differing(path: Path, outputs: dict[str, list[str]]) -> tuple[int, int] | None:
    """(answers that differ from the committed file at `path`, answers compared), or None without one."""
    if not path.is_file():
        return None
    committed = {(r["eval_seed"], r["index"]): r["output"] for r in read_jsonl(path)}
    rows = answer_rows(outputs)
    return sum(committed.get((r["eval_seed"], r["index"])) != r["output"] for r in rows), len(rows)


def write_answers(results_dir: Path, keys: set[tuple[str, str]]) -> list[Path]:
    """Copy the cached answers of each (eval set, teacher key) into results_dir/teacher/; keys whose cache
    entry is not on this machine are left as they are (a committed file stays). Returns the files written."""
    written = []
    for eval_set, key in sorted(keys):
        entry = entry_path(eval_set, key)
        if not entry.is_file():
            continue
        path = answers_path(results_dir, eval_set, key)
        rows = answer_rows(read_json(entry)["outputs"])
        if not path.is_file() or read_jsonl(path) != rows:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_jsonl(path, rows)
            written.append(path)
    return written
