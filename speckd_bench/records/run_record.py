"""The run record: one typed dataclass, written by a run (and by `eval`, with kind "eval") as
record.json and read back by table, report, plot and sweep through `RunRecord.from_json`.

Records of an older schema load through `migrate`. Paths inside a record are relative to the directory
they live in: data files to the data mirror ("mirror:dolly/valid.jsonl"), cache entries to the cache
directory, run files to the run folder; so a committed record names no folder of the machine that made it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speckd_bench.caches import atomic_write_json
from speckd_bench.config.run_config import RunConfig
from speckd_bench.errors import UserError
from speckd_bench.methods.discovery import method_config

SCHEMA_VERSION = 2
RECORD_FILE = "record.json"
COMPLETE, INTERRUPTED = "complete", "interrupted"


class RecordError(ValueError):
    """A record.json that cannot be used (garbled, missing fields, wrong types); the message says why."""


@dataclass
class RunRecord:
    run_id: str | None
    """The run's folder name; for an eval record, the run it scored (None for a model that is no run)."""
    status: str
    """complete | interrupted."""
    task: str
    main_metric: str
    config: dict[str, Any]
    """The resolved RunConfig (RunConfig.to_dict()), with machine-specific paths left out."""
    versions: dict[str, Any]
    hardware: dict[str, Any]
    timings: dict[str, Any]
    metrics: dict[str, Any]
    """Per eval set: before (raw, init), after, reference (teacher, floors)."""
    paths: dict[str, Any]
    """Files of the run, relative to its folder."""
    schema_version: int = SCHEMA_VERSION
    kind: str = "run"
    """run | eval."""
    created: str | None = None
    method: str | None = None
    seed: int | None = None
    num_processes: int = 1
    global_batch: int | None = None
    teacher_sharding: str | None = None
    method_info: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    models: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    resumed_from_step: list[Any] = field(default_factory=list)
    init: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    lm_eval: dict[str, Any] | None = None
    teacher_cache: dict[str, Any] = field(default_factory=lambda: {"used": False})
    resume: dict[str, Any] | None = None
    """How to continue an interrupted run."""
    eval_id: str | None = None
    model: dict[str, Any] | None = None
    """The model an eval record scored (name, source)."""

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    def to_json(self) -> dict[str, Any]:
        """The record as written: optional parts that are unset are left out."""
        data = dataclasses.asdict(self)
        optional = ("resume", "eval_id", "model") if self.kind == "run" else ("resume",)
        return {k: v for k, v in data.items() if not (k in optional and v is None)}

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """A record from its parsed JSON (any schema this package can migrate); RecordError says why not."""
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        data = migrate(data)
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise RecordError(f"unknown fields {', '.join(unknown)}")
        missing = [n for n, f in names.items() if _required(f) and n not in data]
        if missing:
            raise RecordError(f"missing fields {', '.join(missing)}")
        for name, value in data.items():
            expected = _container(names[name])
            optional = value is None and "None" in str(names[name].type)
            if expected is not None and not optional and not isinstance(value, expected):
                raise RecordError(f"field {name} is {type(value).__name__}, expected {expected.__name__}")
        if data["status"] not in (COMPLETE, INTERRUPTED):
            raise RecordError(f"status {data['status']}")
        return cls(**{**data, "config": with_later_settings(data["config"])})

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Load a record.json; RecordError names what is wrong with it."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RecordError(f"unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
        return cls.from_json(data)


def with_later_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every setting added to the harness after the record was written, at its default
    (a setting is added with a default that does what runs did before it existed), so that old and new
    records of the same run compare equal. Method settings come from the recorded method's own config
    class (and are left as recorded when that method is not registered, e.g. a plugin not loaded)."""
    filled = json.loads(json.dumps(config))
    for section, defaults in RunConfig().to_dict().items():
        if section != "method" and isinstance(defaults, dict) and isinstance(filled.get(section), dict):
            filled[section] = {**defaults, **filled[section]}
    method = filled.get("method")
    if isinstance(method, dict):
        try:
            mcfg, own = method_config(str(method.get("name")))
        except UserError:
            return filled
        own_defaults = {key.removeprefix("method."): value for key, value in own.items()}
        filled["method"] = {**dataclasses.asdict(mcfg), **own_defaults, **method}
    return filled


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _container(f: dataclasses.Field) -> type | None:
    """dict or list for the fields that must hold one (None may stand for an optional one)."""
    hint = str(f.type)
    if hint.startswith("dict"):
        return dict
    if hint.startswith("list"):
        return list
    return None


def portable_config(config: dict[str, Any], keep_data_dir: bool = False) -> dict[str, Any]:
    """A resolved config without the folders of the machine that ran it (the results and data folders,
    which never change a result and are known from where the record lives). `keep_data_dir`: the data
    folder stays, as a run folder's own config needs it to resume."""
    config = json.loads(json.dumps(config))
    if Path(str(config.get("results_dir", ""))).is_absolute():
        config["results_dir"] = "."
    data = config.get("data", {})
    if (
        not keep_data_dir
        and isinstance(data, dict)
        and data.get("data_dir")
        and Path(data["data_dir"]).is_absolute()
    ):
        data["data_dir"] = None
    return config


def _relative_source(source: Any, mirror: str) -> Any:
    if isinstance(source, str) and mirror and source.startswith(mirror.rstrip("/") + "/"):
        return "mirror:" + source[len(mirror.rstrip("/")) + 1 :]
    return source


def _migrate_1(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: absolute data, cache and results paths become relative; method settings that the
    method's own config class does not declare are dropped (schema 1 kept every method's settings)."""
    data = json.loads(json.dumps(data))
    facts = data.get("data")
    if isinstance(facts, dict):
        mirror = facts.get("source") if facts.get("source") != "hub" else ""
        for key in ("train_file", "eval_file"):
            if key in facts:
                facts[key] = _relative_source(facts[key], mirror or "")
        for per_set in (facts.get("eval_sets") or {}).values():
            if isinstance(per_set, dict) and "source" in per_set:
                per_set["source"] = _relative_source(per_set["source"], mirror or "")
        if mirror:
            facts["source"] = "mirror"
    models = data.get("models")
    if isinstance(models, dict) and isinstance(models.get("teacher_source"), str):
        models["teacher_source"] = re.sub(
            r"cached at \S*/(models/[^/\s]+)$", r"converted in the cache: \1", models["teacher_source"]
        )
    cache = data.get("teacher_cache")
    if isinstance(cache, dict) and isinstance(cache.get("path"), str) and "teacher-topk/" in cache["path"]:
        cache["path"] = "teacher-topk/" + cache["path"].rsplit("teacher-topk/", 1)[1]
    if isinstance(data.get("config"), dict):
        data["config"] = _own_method_settings(portable_config(data["config"]))
    data["schema_version"] = 2
    return data


def _own_method_settings(config: dict[str, Any]) -> dict[str, Any]:
    method = config.get("method")
    if not isinstance(method, dict):
        return config
    try:
        own = {f.name for f in dataclasses.fields(method_config(str(method.get("name")))[0])}
    except UserError:  # a plugin method that is not loaded: keep what was recorded
        return config
    config["method"] = {k: v for k, v in method.items() if k in own}
    return config


MIGRATIONS = {1: _migrate_1}
"""schema version -> the function that lifts a record of that version by one."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Lift a parsed record to SCHEMA_VERSION, one version at a time."""
    if "schema_version" not in data:
        raise RecordError("missing fields schema_version")
    version = data["schema_version"]
    while version != SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise RecordError(f"schema version {version!r} (this package reads 1 to {SCHEMA_VERSION})")
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return data
