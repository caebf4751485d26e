"""Task plugins: one YAML file per task (tasks/*.yaml, `--plugins DIR`, $SPECKD_PLUGINS or the entry-point
group `speckd_bench.tasks`), validated against a small schema whose errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.registry import Registry

KINDS = ("instruction", "summarization", "math", "translation")


@dataclass(frozen=True)
class SplitSource:
    """Where one split's rows come from: a file in the local mirror, else the hub."""

    mirror: str
    """Path relative to the mirror directory (JSONL, one row per line)."""
    hub_repo: str | None = None
    """Hub dataset repository holding `hub_file` (JSONL), e.g. MiniLLM/dolly."""
    hub_file: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    description: str
    splits: dict[str, SplitSource]
    """At least `eval`; `train` when the task can be trained on."""
    prompt: str
    """Template with {field} placeholders, used when the input field is empty or absent."""
    prompt_with_input: str | None
    input_field: str | None
    reference_field: str
    """A string or a list of strings per row (several references: metrics take the max)."""
    metrics: tuple[str, ...]
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self, row: dict[str, Any]) -> str:
        has_input = bool(self.input_field and str(row.get(self.input_field) or "").strip())
        template = self.prompt_with_input if has_input and self.prompt_with_input else self.prompt
        return template.format_map(row)

    def references(self, row: dict[str, Any]) -> list[str]:
        value = row[self.reference_field]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]


TASKS: Registry[TaskSpec] = Registry("task")

_REQUIRED = {"name": str, "kind": str, "description": str, "splits": dict, "prompt": dict, "reference": str}
_OPTIONAL = {"metrics": list, "input_field": str}


def _need(cond: bool, path: Path, key: str, expected: str) -> None:
    if not cond:
        raise UserError(f"{path}: key {key!r} {expected}")


def parse_task(tree: Any, path: Path) -> TaskSpec:
    """Validate a task YAML tree and build its TaskSpec."""
    _need(isinstance(tree, dict), path, "<top>", "must be a mapping")
    known = set(_REQUIRED) | set(_OPTIONAL)
    for key in tree:
        _need(
            key in known, path, key, f"is not a task field{did_you_mean(key, known)}; known: {sorted(known)}"
        )
    for key, typ in _REQUIRED.items():
        _need(key in tree, path, key, "is missing")
        _need(isinstance(tree[key], typ), path, key, f"must be a {typ.__name__}")
    for key, typ in _OPTIONAL.items():
        if key in tree:
            _need(isinstance(tree[key], typ), path, key, f"must be a {typ.__name__}")
    _need(tree["kind"] in KINDS, path, "kind", f"must be one of {', '.join(KINDS)}")
    _need("eval" in tree["splits"], path, "splits", "must have an `eval` split")
    splits = {}
    for split, src in tree["splits"].items():
        key = f"splits.{split}"
        _need(isinstance(src, dict) and isinstance(src.get("mirror"), str), path, key, "needs `mirror: FILE`")
        hub = src.get("hub") or {}
        _need(isinstance(hub, dict), path, f"{key}.hub", "must be a mapping with repo and file")
        splits[split] = SplitSource(src["mirror"], hub.get("repo"), hub.get("file"))
    prompt = tree["prompt"]
    _need(isinstance(prompt.get("template"), str), path, "prompt.template", "must be a string")
    metrics = tuple(tree.get("metrics", ["rougeL"]))
    return TaskSpec(
        name=tree["name"],
        kind=tree["kind"],
        description=tree["description"],
        splits=splits,
        prompt=prompt["template"],
        prompt_with_input=prompt.get("template_with_input"),
        input_field=tree.get("input_field"),
        reference_field=tree["reference"],
        metrics=metrics,
        path=str(path),
    )


def load_task_file(path: Path) -> TaskSpec:
    try:
        tree = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise UserError(f"cannot read task file {path}: {exc.strerror}") from None
    return parse_task(tree, Path(path))


def _task_files(plugin_dirs: list[Path]) -> list[Path]:
    """Built-in task files first, then entry points, $SPECKD_PLUGINS and --plugins directories."""
    builtin = resources.files("speckd_bench.builtin_tasks")
    files = sorted(
        (Path(str(p)) for p in builtin.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name
    )
    env_dirs = [Path(d) for d in os.environ.get("SPECKD_PLUGINS", "").split(os.pathsep) if d]
    for ep in entry_points(group="speckd_bench.tasks"):
        env_dirs.append(Path(ep.load()))
    for directory in [*env_dirs, *plugin_dirs]:
        if not Path(directory).is_dir():
            raise UserError(f"plugin directory {directory} does not exist")
        files.extend(sorted(Path(directory).glob("*.yaml")))
    return files


def discover_tasks(plugin_dirs: list[Path] | None = None) -> Registry[TaskSpec]:
    """Register built-in and plugin tasks (a plugin may replace a built-in of the same name)."""
    for path in _task_files(list(plugin_dirs or [])):
        spec = load_task_file(path)
        TASKS.register(spec.name, spec, replace=True)
    return TASKS
