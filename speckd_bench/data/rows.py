"""Task rows from a local mirror (JSON Lines, Parquet, CSV or aligned text files) or the hub, each
checked: every field a prompt or reference uses is present and UTF-8 text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speckd_bench.config.run_config import DataConfig
from speckd_bench.data.tasks import FieldSpec, HubSource, SplitSource, TaskSpec
from speckd_bench.errors import UserError
from speckd_bench.jsonl import numbered_objects


class DataUnavailable(UserError):
    """A split's rows are in neither the local mirror nor a reachable hub."""


def mirror_dir(cfg: DataConfig) -> Path | None:
    """--data-dir, else $SPECKD_DATA_DIR, else None (hub only)."""
    value = cfg.data_dir or os.environ.get("SPECKD_DATA_DIR")
    return Path(value).expanduser() if value else None


def in_mirror(src: SplitSource, cfg: DataConfig) -> bool:
    """Whether the local mirror holds every file of the split (so its rows are read from there)."""
    base, files = mirror_dir(cfg), src.mirror_files
    return base is not None and bool(files) and all((base / f).is_file() for f in files)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file, each with its `_source` (file:line); a bad line fails naming both."""
    return [{**row, "_source": f"{path}:{number}"} for number, row in numbered_objects(path)]


def read_columns(base: Path, columns: dict[str, str]) -> list[dict[str, Any]]:
    """Rows from aligned plain-text files (one field per file, line i of each is row i)."""
    texts = {}
    for name, rel in columns.items():
        try:
            texts[name] = (base / rel).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"cannot read {base / rel}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{base / rel}: not UTF-8 text (byte {exc.start})") from None
    sizes = {columns[name]: len(lines) for name, lines in texts.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{f} has {n}" for f, n in sizes.items())
        raise UserError(f"aligned files differ in line count ({listed}); line i of each must be row i")
    first = next(iter(columns.values()))
    return [
        {**{name: lines[i] for name, lines in texts.items()}, "_source": f"{base / first}:{i + 1}"}
        for i in range(len(texts[next(iter(texts))]))
    ]


def _dataset_rows(data: Any, where: str) -> list[dict[str, Any]]:
    return [{**row, "_source": f"{where} row {i + 1}"} for i, row in enumerate(data)]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines (.jsonl / .json), Parquet or CSV file."""
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    kinds = {".parquet": "parquet", ".csv": "csv"}
    if path.suffix not in kinds:
        raise UserError(f"{path}: unsupported data file type; use JSON Lines, Parquet or CSV")
    import datasets

    return _dataset_rows(
        datasets.load_dataset(kinds[path.suffix], data_files=str(path), split="train"), str(path)
    )


def _hub_rows(hub: HubSource) -> list[dict[str, Any]]:
    """Rows of a file in a hub dataset repo, or of a dataset split through datasets.load_dataset."""
    if hub.file:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(
            repo_id=hub.repo, filename=hub.file, repo_type="dataset", revision=hub.revision
        )
        return read_rows(Path(path))
    import datasets

    data = datasets.load_dataset(hub.dataset, hub.config, split=hub.split, revision=hub.revision)
    return _dataset_rows(data, hub.describe())


def _source_rows(task: TaskSpec, split: str, cfg: DataConfig) -> tuple[list[dict[str, Any]], str, bool]:
    """(raw rows, where they came from, from the hub?) for one split: the mirror first, then the hub."""
    src = task.splits[split]
    base = mirror_dir(cfg)
    files = src.mirror_files
    if base is not None and files and all((base / f).is_file() for f in files):
        rows = read_rows(base / src.mirror) if src.mirror else read_columns(base, src.columns)
        return rows, f"mirror:{', '.join(files)}", False
    where = f"mirror {base}" if base is not None else "no mirror (--data-dir / SPECKD_DATA_DIR unset)"
    wanted = " and ".join(files)
    if src.hub is None:
        raise DataUnavailable(
            f"task {task.name}: {wanted} not found ({where}) and the task has no hub source; "
            f"pass --data-dir DIR with DIR/{files[0]}"
        )
    try:
        return _hub_rows(src.hub), src.hub.describe(), True
    except UserError:
        raise
    except Exception as exc:  # offline, no such repo, auth: all mean the same to the user
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__
        if files:
            fix = f"{wanted} not found ({where}); pass --data-dir DIR (or set SPECKD_DATA_DIR) holding it"
        else:
            fix = "the task is hub-only: run once with hub access (downloads are cached)"
        raise DataUnavailable(
            f"task {task.name}: {src.hub.describe()} could not be loaded ({reason}); {fix}"
        ) from None


def _check_text(row: dict[str, Any], name: str) -> None:
    """A reference or target field holds a string or a list of strings, each encodable as UTF-8."""
    value = row[name]
    items = value if isinstance(value, list) else [value]
    bad = next((v for v in items if not isinstance(v, str)), None)
    if bad is not None or value is None:
        raise UserError(
            f"{row['_source']}: field {name!r} is {json.dumps(bad)[:40]}; a reference or target must be a "
            "string or a list of strings"
        )
    for text in items:
        _check_utf8(row, name, text)


def _check_utf8(row: dict[str, Any], name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(
            f"{row['_source']}: {name} holds a lone surrogate at character {exc.start} (not valid text)"
        ) from None


def _check_prompt_fields(task: TaskSpec, row: dict[str, Any]) -> None:
    """Every field the prompt renders is a string: null, a number, a list or an object would be rendered
    as its Python text ("None", "['a']") and trained on."""
    for name in task.prompt_fields(row):
        if not isinstance(row[name], str):
            raise UserError(
                f"{row['_source']}: prompt field {name!r} is {json.dumps(row[name], default=repr)[:40]}; "
                f"every field the prompt of task {task.name} renders must be a string"
            )


def _check_row(task: TaskSpec, row: dict[str, Any], mapping: dict[str, FieldSpec]) -> None:
    """Apply the field mapping in place; a row that cannot feed the prompt or the references fails."""
    for name, spec in mapping.items():
        try:
            row[name] = spec.resolve(row)
        except KeyError as exc:
            raise UserError(
                f"{row['_source']}: row lacks field {exc.args[0]!r} (mapped to {name!r}) of task {task.name}"
            ) from None
    missing = [f for f in task.required_fields if f not in row]
    prompt = ""
    if not missing:
        try:
            prompt = task.render(row)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
    if missing:
        raise UserError(f"{row['_source']}: row lacks field {missing[0]!r} required by task {task.name}")
    _check_utf8(row, "the prompt", prompt)
    _check_prompt_fields(task, row)
    for name in task.required_fields:
        _check_text(row, name)
    if not task.references(row):
        raise UserError(f"{row['_source']}: row has no reference (fields {', '.join(task.reference_fields)})")


@dataclass
class Rows:
    rows: list[dict[str, Any]]
    source: str
    """Where the rows came from: `mirror:FILE` (relative to the data mirror) or the hub dataset."""


def load_split(task: TaskSpec, split: str, cfg: DataConfig) -> Rows:
    """All rows of one split of a task, mapped to the task's fields, and where they came from."""
    if split not in task.splits:
        raise UserError(f"task {task.name} has no {split!r} split (it has: {', '.join(task.splits)})")
    rows, source, from_hub = _source_rows(task, split, cfg)
    src = task.splits[split]
    mapping = {**task.fields, **(src.hub.fields if from_hub and src.hub else src.fields)}
    for row in rows:
        _check_row(task, row, mapping)
    if not rows:
        raise UserError(f"task {task.name}: split {split} ({source}) has no rows")
    return Rows(rows, source)


def load_rows(task: TaskSpec, split: str, cfg: DataConfig) -> list[dict[str, Any]]:
    """All rows of one split of a task (see load_split)."""
    return load_split(task, split, cfg).rows
