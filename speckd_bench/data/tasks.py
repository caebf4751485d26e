"""Task plugins: one YAML file per task (tasks/*.yaml, `--plugins DIR`, $SPECKD_PLUGINS or the entry-point
group `speckd_bench.tasks`), validated against a schema whose errors name the file, the key and what is
expected. A YAML file with a top-level `suite:` key defines a suite: named eval sets scored together.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from speckd_bench.api.metrics import METRICS
from speckd_bench.caches import digest
from speckd_bench.config.run_config import RunConfig, apply_overrides, read_yaml
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.plugin_dirs import builtin_dir, env_plugin_dirs
from speckd_bench.registry import NAME, Registry, import_file

KINDS = ("instruction", "summarization", "math", "translation")


DECODING_PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {"eval.decoding": "greedy", "eval.no_repeat_ngram_size": 0},
    # MiniLLM protocol: pure sampling, five eval seeds.
    "minillm": {
        "eval.decoding": "sample",
        "eval.temperature": 1.0,
        "eval.top_p": 1.0,
        "eval.top_k": 0,
        "eval.no_repeat_ngram_size": 6,
        "eval.seeds": [10, 20, 30, 40, 50],
    },
}


HOOK_FUNCTIONS = ("extract_prediction", "extract_reference")


"""Task and suite names: they become file names, record keys and table labels."""


@dataclass(frozen=True)
class FieldSpec:
    """A row field built from source fields: one dotted path, or several collected into a list."""

    sources: tuple[str, ...]
    many: bool = False
    """True: the value is the list of the sources' values (list values are flattened into it)."""
    join: str | None = None
    """Join a list value into one string with this separator."""

    def resolve(self, row: dict[str, Any]) -> Any:
        values = [_lookup(row, path) for path in self.sources]
        if self.many:
            value: Any = [v for item in values for v in (item if isinstance(item, list) else [item])]
        else:
            value = values[0]
        if self.join is not None and isinstance(value, list):
            value = self.join.join(str(v) for v in value)
        return value


def _lookup(row: dict[str, Any], path: str) -> Any:
    """row[path], else a walk down dotted keys; KeyError(path) when absent."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


@dataclass(frozen=True)
class HubSource:
    """Rows from the Hugging Face hub: a JSONL file of a dataset repo, or a dataset through datasets."""

    repo: str | None = None
    file: str | None = None
    """A JSONL, JSON Lines, Parquet or CSV file of dataset repo `repo`."""
    dataset: str | None = None
    """A `datasets.load_dataset` id (a local dataset folder works too)."""
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    """Field mapping for hub rows (over the task's `fields`)."""

    def describe(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        if self.dataset:
            config = f"/{self.config}" if self.config else ""
            return f"hub dataset {self.dataset}{config}{at} [{self.split}]"
        return f"hub file {self.repo}{at}:{self.file}"


@dataclass(frozen=True)
class SplitSource:
    """Where one split's rows come from: the local mirror when it has the files, else the hub."""

    mirror: str | None = None
    """A JSONL (or Parquet / CSV) file relative to the mirror directory."""
    columns: dict[str, str] = field(default_factory=dict)
    """Plain-text files relative to the mirror, one per field; line i of every file is row i."""
    hub: HubSource | None = None
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    """Field mapping for mirror rows of this split (over the task's `fields`)."""

    @property
    def mirror_files(self) -> list[str]:
        return [self.mirror] if self.mirror else list(self.columns.values())

    def describe(self) -> str:
        parts = [f"mirror {' + '.join(self.mirror_files)}"] if self.mirror_files else []
        if self.hub:
            parts.append(self.hub.describe())
        return " | ".join(parts)


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
    reference_fields: tuple[str, ...]
    """Fields holding a string or a list of strings each; all together are the references (max over)."""
    target_field: str
    """The training response (default: the first reference field, first string)."""
    metrics: tuple[str, ...]
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    decoding: str = "greedy"
    defaults: dict[str, Any] = field(default_factory=dict)
    """`data.*` / `eval.*` run settings this task brings (below the preset, the config file and --set)."""
    extract_prediction: Callable[[str], str] | None = None
    extract_reference: Callable[[str], str] | None = None
    lm_eval: tuple[str, ...] = ()
    """lm-evaluation-harness tasks that measure the same skill (`--lm-eval @task` runs them)."""
    hook: str | None = None
    """Absolute path of the task's hook file (the YAML names it relative to itself)."""
    path: str = ""
    plugin_dir: str | None = None
    """The plugin directory the task file came from (as given); None for a built-in task."""

    def template(self, row: dict[str, Any]) -> str:
        """The prompt template for `row`: the one with input when its input field is not blank."""
        has_input = bool(self.input_field and str(row.get(self.input_field) or "").strip())
        return self.prompt_with_input if has_input and self.prompt_with_input else self.prompt

    def render(self, row: dict[str, Any]) -> str:
        return self.template(row).format_map(row)

    def prompt_fields(self, row: dict[str, Any]) -> list[str]:
        """The row fields that the prompt of `row` renders."""
        return [re.split(r"[.\[]", name, maxsplit=1)[0] for name in template_fields(self.template(row))]

    def references(self, row: dict[str, Any]) -> list[str]:
        refs = []
        for name in self.reference_fields:
            value = row[name]
            refs.extend(str(v) for v in (value if isinstance(value, list) else [value]))
        return [self.extract_reference(r) for r in refs] if self.extract_reference else refs

    def target(self, row: dict[str, Any]) -> str:
        value = row[self.target_field]
        return str(value[0] if isinstance(value, list) else value)

    def answer(self, output: str) -> str:
        """What the metrics score of a model output (the hook's extraction, else the output)."""
        return self.extract_prediction(output) if self.extract_prediction else output

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.reference_fields, self.target_field)))


@dataclass(frozen=True)
class Suite:
    """Eval sets scored together after training (e.g. the five MiniLLM sets) and their decoding."""

    name: str
    description: str
    sets: tuple[str, ...]
    decoding: str | None = None
    path: str = ""


TASKS: Registry[TaskSpec] = Registry("task")


SUITES: Registry[Suite] = Registry("suite")


_TASK_KEYS = {
    "name": "the task name (a-z, 0-9, _ and -)",
    "kind": f"one of {', '.join(KINDS)}",
    "description": "one line on what the task measures",
    "splits": "a mapping of split name to source (`eval` required)",
    "prompt": "a mapping with `template` (and optional `template_with_input`)",
    "reference": "a field name or a list of field names",
    "target": "the field holding the training response",
    "input_field": "the field whose emptiness selects `prompt.template`",
    "fields": "a mapping of field name to source path, list of paths, or {from, join}",
    "metrics": f"a list of metric names ({', '.join(METRICS)})",
    "decoding": f"a decoding preset ({', '.join(DECODING_PRESETS)})",
    "defaults": "a mapping of data.* / eval.* run settings",
    "hook": "a .py file beside the YAML (extract_prediction / extract_reference / metrics)",
    "lm_eval": "a list of lm-evaluation-harness task names",
}


_REQUIRED = ("name", "kind", "description", "splits", "prompt", "reference")


_SUITE_KEYS = {
    "suite": "the suite name",
    "description": "one line on the suite",
    "sets": "a list of task names whose eval splits are scored",
    "decoding": f"a decoding preset ({', '.join(DECODING_PRESETS)})",
}


class _Checker:
    """Schema errors as one line: FILE: key 'KEY' PROBLEM (expected: WHAT)."""

    def __init__(self, path: Path, expected: dict[str, str]) -> None:
        self.path, self.expected = path, expected

    def need(self, cond: bool, key: str, problem: str) -> None:
        if not cond:
            top = key.split(".")[0]
            hint = f" (expected: {self.expected[top]})" if top in self.expected else ""
            raise UserError(f"{self.path}: key {key!r} {problem}{hint}")

    def keys(self, tree: dict[str, Any], where: str, known: list[str] | dict[str, str]) -> None:
        for key in tree:
            name = f"{where}.{key}" if where else str(key)
            self.need(key in known, name, f"is not a known field{did_you_mean(str(key), known)}")

    def string(self, tree: dict[str, Any], key: str, where: str = "") -> str | None:
        value = tree.get(key)
        self.need(value is None or isinstance(value, str), f"{where}{key}", "must be a string")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        self.need(
            isinstance(items, list) and bool(items) and all(isinstance(v, str) for v in items),
            key,
            "must be a string or a non-empty list of strings",
        )
        return tuple(items)


def _parse_fields(tree: Any, check: _Checker, key: str) -> dict[str, FieldSpec]:
    check.need(isinstance(tree, dict), key, "must be a mapping")
    out = {}
    for name, spec in tree.items():
        where = f"{key}.{name}"
        join = None
        if isinstance(spec, dict):
            check.keys(spec, where, ["from", "join"])
            check.need("from" in spec, f"{where}.from", "is missing")
            join = check.string(spec, "join", f"{where}.")
            spec = spec["from"]
        sources = check.names(spec, where)
        out[str(name)] = FieldSpec(sources, many=isinstance(spec, list), join=join)
    return out


def _parse_hub(tree: Any, check: _Checker, key: str) -> HubSource:
    check.need(isinstance(tree, dict), key, "must be a mapping: {repo, file} or {dataset, config, split}")
    names = ("repo", "file", "dataset", "config", "split", "revision")
    check.keys(tree, key, [*names, "fields"])
    values = {k: check.string(tree, k, f"{key}.") for k in names}
    by_file = bool(values["repo"] and values["file"])
    by_dataset = bool(values["dataset"] and values["split"])
    check.need(
        by_file != by_dataset, key, "needs either `repo` and `file` (a JSONL file) or `dataset` and `split`"
    )
    fields = _parse_fields(tree["fields"], check, f"{key}.fields") if "fields" in tree else {}
    return HubSource(**values, fields=fields)


def _parse_split(tree: Any, check: _Checker, key: str) -> SplitSource:
    check.need(isinstance(tree, dict), key, "must be a mapping with `mirror` and/or `hub`")
    check.keys(tree, key, ["mirror", "hub", "fields"])
    mirror = tree.get("mirror")
    columns: dict[str, str] = {}
    if isinstance(mirror, dict):
        columns = {str(k): v for k, v in mirror.items()}
        check.need(
            bool(columns) and all(isinstance(v, str) for v in columns.values()),
            f"{key}.mirror",
            "must be a JSONL file or a mapping of field to plain-text file",
        )
        mirror = None
    check.need(mirror is None or isinstance(mirror, str), f"{key}.mirror", "must be a file path")
    hub = _parse_hub(tree["hub"], check, f"{key}.hub") if "hub" in tree else None
    check.need(bool(mirror or columns or hub), key, "needs `mirror` (files in the local mirror) or `hub`")
    fields = _parse_fields(tree["fields"], check, f"{key}.fields") if "fields" in tree else {}
    return SplitSource(mirror, columns, hub, fields)


def template_fields(template: str) -> list[str]:
    """The placeholders of a format template, as written ("{a.b}" gives "a.b"); ValueError when garbled."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _check_template(template: Any, check: _Checker, key: str) -> str:
    check.need(isinstance(template, str), key, "must be a string")
    try:
        fields = template_fields(template)
    except ValueError as exc:
        check.need(False, key, f"is not a valid template ({exc}); write literal braces as {{{{ }}}}")
    check.need(all(fields), key, "has an empty {} placeholder; name a field, e.g. {instruction}")
    return template


def _load_hook(path: Path, check: _Checker) -> ModuleType:
    check.need(path.suffix == ".py" and path.is_file(), "hook", f"names {path}, which is not a .py file")
    module = import_file(path, "speckd_task_hook")
    for name in HOOK_FUNCTIONS:
        check.need(
            callable(getattr(module, name, len)), "hook", f"{path} defines {name}, but not as a function"
        )
    return module


def _parse_defaults(tree: Any, check: _Checker) -> dict[str, Any]:
    check.need(isinstance(tree, dict), "defaults", "must be a mapping")
    for key in tree:
        check.need(
            str(key).startswith(("data.", "eval.")), f"defaults.{key}", "is not a data.* or eval.* setting"
        )
    try:
        apply_overrides(RunConfig(), tree, "defaults")
    except UserError as exc:
        check.need(False, "defaults", f"is invalid: {exc}")
    return dict(tree)


def parse_task(tree: Any, path: Path) -> TaskSpec:
    """Validate a task YAML tree (importing its hook) and build its TaskSpec."""
    check = _Checker(path, _TASK_KEYS)
    check.need(isinstance(tree, dict), "<top>", "must be a mapping of task fields")
    check.keys(tree, "", _TASK_KEYS)
    for key in _REQUIRED:
        check.need(key in tree, key, "is missing")
    for key in ("name", "kind", "description", "target", "input_field", "decoding", "hook"):
        check.string(tree, key)
    check.need(bool(NAME.fullmatch(tree["name"])), "name", f"is {tree['name']!r}: use a-z, 0-9, _ and -")
    check.need(tree["kind"] in KINDS, "kind", f"is {tree['kind']!r}{did_you_mean(tree['kind'], KINDS)}")
    check.need(isinstance(tree["splits"], dict) and "eval" in tree["splits"], "splits", "needs an eval split")
    splits = {str(k): _parse_split(v, check, f"splits.{k}") for k, v in tree["splits"].items()}
    prompt = tree["prompt"]
    check.need(isinstance(prompt, dict), "prompt", "must be a mapping")
    check.keys(prompt, "prompt", ["template", "template_with_input"])
    template = _check_template(prompt.get("template"), check, "prompt.template")
    with_input = prompt.get("template_with_input")
    if with_input is not None:
        _check_template(with_input, check, "prompt.template_with_input")
    references = check.names(tree["reference"], "reference")
    decoding = tree.get("decoding", "greedy")
    check.need(decoding in DECODING_PRESETS, "decoding", f"is {decoding!r}")
    hook = None
    if "hook" in tree:
        hook = _load_hook(path.parent / tree["hook"], check)
    metrics = check.names(tree.get("metrics", ["rougeL"]), "metrics")
    for name in metrics:
        check.need(name in METRICS, "metrics", f"names unknown metric {name!r}{did_you_mean(name, METRICS)}")
    return TaskSpec(
        name=tree["name"],
        kind=tree["kind"],
        description=tree["description"],
        splits=splits,
        prompt=template,
        prompt_with_input=with_input,
        input_field=tree.get("input_field"),
        reference_fields=references,
        target_field=tree.get("target", references[0]),
        metrics=metrics,
        fields=_parse_fields(tree["fields"], check, "fields") if "fields" in tree else {},
        decoding=decoding,
        defaults=_parse_defaults(tree["defaults"], check) if "defaults" in tree else {},
        extract_prediction=getattr(hook, "extract_prediction", None),
        extract_reference=getattr(hook, "extract_reference", None),
        lm_eval=check.names(tree["lm_eval"], "lm_eval") if "lm_eval" in tree else (),
        hook=str((path.parent / tree["hook"]).absolute()) if hook else None,
        path=str(path),
    )


def parse_suite(tree: dict[str, Any], path: Path) -> Suite:
    check = _Checker(path, _SUITE_KEYS)
    check.keys(tree, "", _SUITE_KEYS)
    for key in ("suite", "description", "decoding"):
        check.string(tree, key)
    check.need(
        bool(NAME.fullmatch(str(tree["suite"]))), "suite", f"is {tree['suite']!r}: use a-z, 0-9, _ and -"
    )
    check.need("sets" in tree, "sets", "is missing")
    decoding = tree.get("decoding")
    check.need(decoding is None or decoding in DECODING_PRESETS, "decoding", f"is {decoding!r}")
    return Suite(
        tree["suite"], tree.get("description", ""), check.names(tree["sets"], "sets"), decoding, str(path)
    )


def load_plugin_file(path: Path) -> TaskSpec | Suite:
    """A task or (with a top-level `suite:` key) a suite from one YAML file."""
    tree = read_yaml(path, "task file")
    if isinstance(tree, dict) and "suite" in tree:
        return parse_suite(tree, Path(path))
    return parse_task(tree, Path(path))


def load_task_file(path: Path) -> TaskSpec:
    spec = load_plugin_file(path)
    if not isinstance(spec, TaskSpec):
        raise UserError(f"{path} defines suite {spec.name}, not a task")
    return spec


def _entry_point_dir(value: Any, name: str) -> Path:
    """An entry point names a package (its folder holds the YAML files), a path, or a callable giving one."""
    if isinstance(value, ModuleType):
        return Path(value.__file__ or "").parent
    if callable(value):
        value = value()
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise UserError(f"entry point {name} (group speckd_bench.tasks) must name a package or a directory")


def _plugin_dirs(plugin_dirs: list[Path]) -> list[Path]:
    """Task entry points, $SPECKD_PLUGINS, then --plugins directories; each must exist."""
    dirs = [_entry_point_dir(ep.load(), ep.name) for ep in entry_points(group="speckd_bench.tasks")]
    dirs += [*env_plugin_dirs(), *plugin_dirs]
    for directory in dirs:
        if not Path(directory).is_dir():
            raise UserError(f"plugin directory {directory} does not exist")
    return [Path(d) for d in dirs]


def _task_files(plugin_dirs: list[Path]) -> list[tuple[Path, Path | None]]:
    """(file, its plugin directory or None): built-in task files first, then entry points,
    $SPECKD_PLUGINS and --plugins directories."""
    files: list[tuple[Path, Path | None]] = [(p, None) for p in sorted(builtin_dir("tasks").glob("*.yaml"))]
    for directory in _plugin_dirs(plugin_dirs):
        files.extend((path, directory) for path in sorted(directory.glob("*.yaml")))
    return files


def check_suite(suite: Suite) -> None:
    """Every set of a suite must be a registered task."""
    for name in suite.sets:
        if name not in TASKS:
            raise UserError(
                f"{suite.path}: suite {suite.name} names unknown task {name!r}{did_you_mean(name, TASKS)}"
            )


def discover_tasks(plugin_dirs: list[Path] | None = None) -> Registry[TaskSpec]:
    """Register built-in and plugin tasks and suites (a plugin may replace a built-in of the same name)."""
    for path, directory in _task_files(list(plugin_dirs or [])):
        spec = load_plugin_file(path)
        if isinstance(spec, Suite):
            SUITES.register(spec.name, spec, replace=True)
        else:
            origin = None if directory is None else str(directory)
            TASKS.register(spec.name, dataclasses.replace(spec, plugin_dir=origin), replace=True)
    for _, suite in SUITES.items():
        check_suite(suite)
    return TASKS


def eval_set_names(task: str, suite: str) -> list[str]:
    """The sets a run scores: its own task's eval split first, then the suite's other sets."""
    sets = SUITES.get(suite).sets if suite else ()
    return [task, *(name for name in sets if name != task)]


def run_defaults(task: str, suite: str) -> dict[str, Any]:
    """Config defaults a task brings (its decoding preset and `defaults`), then a suite's decoding."""
    out: dict[str, Any] = {}
    if task in TASKS:
        spec = TASKS.get(task)
        out.update(DECODING_PRESETS[spec.decoding])
        out.update(spec.defaults)
    if suite:
        decoding = SUITES.get(suite).decoding
        out.update(DECODING_PRESETS[decoding] if decoding else {})
    return out


def _relative(path: str | None, directory: str | None) -> str | None:
    """`path` relative to `directory` (a task's plugin dir), else its file name."""
    if path is None:
        return None
    inside = directory is not None and Path(path).absolute().is_relative_to(Path(directory).absolute())
    return str(Path(path).absolute().relative_to(Path(directory).absolute())) if inside else Path(path).name


def provenance(task: TaskSpec) -> dict[str, Any]:
    """Where a task came from and what it was, for run records: built-in or plugin (its files relative to
    the plugin directory), a digest of its YAML, hook and metrics, the prompt templates and metrics."""
    return {
        "source": "builtin" if task.plugin_dir is None else "plugin",
        "plugin_dir": task.plugin_dir,
        "file": _relative(task.path, task.plugin_dir),
        "hook": _relative(task.hook, task.plugin_dir),
        "digest": task_digest(task),
        "prompt": task.prompt,
        "prompt_with_input": task.prompt_with_input,
        "metrics": list(task.metrics),
    }


def task_sources(names: list[str]) -> dict[str, dict[str, Any]]:
    """provenance() of each named registered task (a run's eval sets)."""
    return {name: provenance(TASKS.get(name)) for name in names}


def task_digest(task: TaskSpec) -> str:
    """The task file and its hook (an absolute path, as the loader stores it): a changed extraction or
    metric list changes cached scores."""
    files = [Path(p) for p in (task.path, task.hook) if p]
    return digest([f.read_text(encoding="utf-8") for f in files if f.is_file()] + list(task.metrics))
