"""Sweeps: a grid of runs described by one YAML file, expanded into points, each with the digest of its
resolved config and its status in a results directory (docs/sweeps.md).

Every run setting may appear at the top level of the file (a list is an axis, a scalar is fixed); `set:`
holds fixed `--set` overrides, `variants:` named override sets (another axis), `skip:` the points left out
of the full product (e.g. fewer seeds for some methods), `cluster:` the settings of the submitit executor
and `num_processes:` the processes of every run (accelerate).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speckd_bench import caches
from speckd_bench.config.result_keys import result_config
from speckd_bench.config.run_config import flatten, read_yaml
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.engine.recipe import build_run_config
from speckd_bench.errors import UserError
from speckd_bench.methods.discovery import discover_methods

RESERVED = ("name", "set", "variants", "skip", "cluster", "num_processes")
# Run settings that `speckd-bench run` takes as options of their own; every other one goes through --set.
FLAGS = {"preset": "--preset", "task": "--task", "method.name": "--method", "seed": "--seed"}
STATUSES = ("done", "running", "interrupted", "failed", "missing")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Variant:
    """A named override set; `only` restricts it to points whose settings take one of the listed values."""

    name: str
    overrides: dict[str, Any]
    only: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    fixed: dict[str, Any]
    """Run settings shared by every point: the top level's scalars, then `set:`."""
    axes: dict[str, list[Any]]
    """Run setting -> its values, in the file's order (the first axis varies slowest)."""
    variants: list[Variant]
    skip: list[dict[str, list[str]]]
    """Conditions {setting or "variant": allowed values}; a point that meets every key of one is left out."""
    cluster: dict[str, Any]
    num_processes: int | None
    results_dir: str | None
    """The file's results_dir, if it names one (--results-dir wins over it)."""


@dataclass(frozen=True)
class Point:
    """One run of the grid: its settings as `speckd-bench run` takes them, and who it shares caches with."""

    label: str
    coords: dict[str, str]
    """The axis values (and the variant) that name this point."""
    settings: dict[str, str]
    digest: str
    """Digest of the resolved config's result keys: what `run --skip-done` compares."""
    group: str
    """Points with the same group differ only in seed and method settings: they share the warm start,
    the teacher's scores and the teacher cache."""

    def run_args(self) -> list[str]:
        """The options of `speckd-bench run` that start this point (without --results-dir)."""
        flags = [[FLAGS[k], v] for k, v in self.settings.items() if k in FLAGS]
        sets = [["--set", f"{k}={v}"] for k, v in self.settings.items() if k not in FLAGS]
        return [arg for pair in flags + sets for arg in pair]


def _text(value: Any) -> str:
    """A setting's value as `--set` takes it back (the config parses it as YAML for non-str keys)."""
    return value if isinstance(value, str) else json.dumps(value)


def _settings(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """Run settings of a mapping: `method: X` is the method's name; a section mapping is flattened."""
    if not isinstance(tree, dict):
        raise UserError(f"{where} must be a mapping of run settings (section.key: value)")
    flat = flatten(tree)
    return {("method.name" if key == "method" else key): value for key, value in flat.items()}


def _scalar(value: Any, where: str) -> None:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}: expected a single value, got {value!r}")


def _variant(name: Any, body: Any, path: Path) -> Variant:
    where = f"{path}: variant {name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{path}: variant name {name!r}: use letters, digits, '.', '_' or '-'")
    if not isinstance(body, dict) or not body:
        raise UserError(f"{where} must be a non-empty mapping of overrides, or {{set: ..., only: ...}}")
    long_form = set(body) & {"set", "only"}
    if long_form and set(body) - {"set", "only"}:
        raise UserError(f"{where}: mix of overrides and set/only; put the overrides under set:")
    overrides = _settings(body.get("set", {}) if long_form else body, f"{where} set")
    if not overrides:
        raise UserError(f"{where} has no overrides")
    only = _settings(body.get("only", {}), f"{where} only")
    return Variant(
        name,
        overrides,
        {k: [_text(x) for x in (v if isinstance(v, list) else [v])] for k, v in only.items()},
    )


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file; every error is one line naming the file."""
    tree = read_yaml(path, "sweep file")
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a sweep file is a mapping (name:, method: [...], seed: [...], ...)")
    name = tree.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{path}: name {name!r}: use letters, digits, '.', '_' or '-'")
    top = _settings({k: v for k, v in tree.items() if k not in RESERVED}, str(path))
    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for key, value in top.items():
        if isinstance(value, list):
            if not value:
                raise UserError(f"{path}: axis {key} is an empty list")
            for item in value:
                _scalar(item, f"{path}: axis {key}")
            if len(set(map(_text, value))) < len(value):
                raise UserError(f"{path}: axis {key} repeats a value")
            axes[key] = value
        else:
            fixed[key] = value
    if "results_dir" in axes:
        raise UserError(f"{path}: results_dir cannot be an axis: one sweep writes into one directory")
    results_dir = fixed.pop("results_dir", None)
    sets = _settings(tree.get("set") or {}, f"{path}: set")
    twice = sorted((set(fixed) | set(axes)) & set(sets))
    if twice:
        raise UserError(f"{path}: {', '.join(twice)} given both at the top level and under set:")
    variants = tree.get("variants") or {}
    if not isinstance(variants, dict):
        raise UserError(f"{path}: variants must be a mapping of name: {{section.key: value, ...}}")
    skip = tree.get("skip") or []
    if not isinstance(skip, list) or not all(isinstance(c, dict) and c for c in skip):
        raise UserError(
            f"{path}: skip must be a list of conditions, e.g. - {{method: [sft, rkl], seed: [4, 5]}}"
        )
    cluster = tree.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise UserError(f"{path}: cluster must be a mapping (partition:, timeout_min:, ...)")
    processes = tree.get("num_processes")
    if processes is not None and (
        not isinstance(processes, int) or isinstance(processes, bool) or processes < 1
    ):
        raise UserError(f"{path}: num_processes must be an integer >= 1, got {processes!r}")
    return Sweep(
        name,
        path,
        {**fixed, **sets},
        axes,
        [_variant(n, body, path) for n, body in variants.items()],
        [_condition(c, path) for c in skip],
        cluster,
        processes,
        None if results_dir is None else str(results_dir),
    )


def _condition(body: dict[str, Any], path: Path) -> dict[str, list[str]]:
    """One `skip:` entry: {setting, or "variant": the values it matches}."""
    flat = {"variant": body.pop("variant")} if "variant" in body else {}
    flat |= _settings(body, f"{path}: skip")
    return {k: [_text(x) for x in (v if isinstance(v, list) else [v])] for k, v in flat.items()}


def _skipped(sweep: Sweep, settings: dict[str, str], variant: str | None) -> bool:
    """Whether a point meets every key of one of the sweep's skip conditions."""
    named = settings | {"variant": variant or ""}
    for condition in sweep.skip:
        unknown = [k for k in condition if k not in named]
        if unknown:
            raise UserError(f"{sweep.path}: skip: {unknown[0]} is not a setting of the sweep")
        if all(named[k] in allowed for k, allowed in condition.items()):
            return True
    return False


def _applies(variant: Variant, settings: dict[str, str], path: Path) -> bool:
    for key, allowed in variant.only.items():
        if key not in settings:
            raise UserError(f"{path}: variant {variant.name}: only: {key} is not a setting of the sweep")
        if settings[key] not in allowed:
            return False
    return True


def resolve(settings: dict[str, str], results_dir: Path) -> Any:
    """The RunConfig `speckd-bench run` builds from these settings (the same call as the `run` command)."""
    discover_tasks()
    discover_methods()
    return build_run_config(overrides={**settings, "results_dir": str(results_dir)})


def config_keys(config: dict[str, Any]) -> tuple[str, str]:
    """(digest, group) of a resolved config: its result keys, and those without seed and method.*."""
    across_seeds = result_config(config, with_seed=False)
    shared = {k: v for k, v in across_seeds.items() if not k.startswith("method.")}
    return caches.digest(result_config(config)), caches.digest(shared)


def expand(sweep: Sweep, results_dir: Path) -> list[Point]:
    """Every point of the grid, axes in file order (the first varies slowest), each point without a
    variant followed by the variants that apply to it."""
    points: list[Point] = []
    seen: dict[str, str] = {}
    for values in itertools.product(*sweep.axes.values()):
        chosen = {k: _text(v) for k, v in zip(sweep.axes, values, strict=True)}
        coords = {("method" if k == "method.name" else k): v for k, v in chosen.items()}
        base = {k: _text(v) for k, v in sweep.fixed.items()} | chosen
        plain = [(None, base)]
        with_variants = [
            (v.name, base | {k: _text(x) for k, x in v.overrides.items()})
            for v in sweep.variants
            if _applies(v, base, sweep.path)
        ]
        for variant, settings in plain + with_variants:
            if _skipped(sweep, settings, variant):
                continue
            named = coords | ({"variant": variant} if variant else {})
            label = " ".join(f"{k}={v}" for k, v in named.items()) or sweep.name
            try:
                cfg = resolve(settings, results_dir)
            except UserError as exc:
                raise UserError(f"{sweep.path}: run {label}: {exc}") from None
            digest, group = config_keys(cfg.to_dict())
            if digest in seen:
                raise UserError(f"{sweep.path}: runs {seen[digest]} and {label} resolve to the same config")
            seen[digest] = label
            points.append(Point(label, named, settings, digest, group))
    return points


def load_points(file: Path, results_dir: Path | None) -> tuple[Sweep, Path, list[Point]]:
    """(sweep, results directory, points): the file read, checked and expanded; the results directory is
    `results_dir`, else the file's `results_dir`, else results."""
    sweep = load_sweep(file)
    where = results_dir or Path(sweep.results_dir or "results")
    return sweep, where, expand(sweep, where)
