"""Method plugins: a name, a description, the paper, config defaults and whether a teacher is needed.

Built-in methods live in speckd_bench/speckd.py (registered here) and the baselines/ package; others
come from the entry-point group `speckd_bench.methods` or a `--plugins DIR` of *.py files.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from speckd_bench.registry import Registry, import_file


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)
    """`method.*` overrides applied before the user's config (keys without the `method.` prefix)."""
    uses_teacher: bool = True
    """False: cross-entropy on the targets (SFT); True: divergence to the teacher (+ optional gate)."""
    data_policy: str = "ground_truth"


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    return METHODS.register(method.name, method, replace=True)


register_method(
    Method(
        name="speckd",
        description="SpecKD: divergence counted only where the teacher accepts the student's proposal",
        paper="Huang et al. 2025, arXiv 2510.24021",
        defaults={"gate": "speckd", "divergence": "fkl", "rule": "topk", "k": 5, "propose": "greedy"},
    )
)


def discover_methods(plugin_dirs: list[Path] | None = None) -> Registry[Method]:
    """Import the built-in baselines, entry points and *.py files of plugin dirs; return the registry."""
    import speckd_bench.baselines as builtin

    for info in pkgutil.iter_modules(builtin.__path__):
        importlib.import_module(f"{builtin.__name__}.{info.name}")
    for ep in entry_points(group="speckd_bench.methods"):
        ep.load()
    for directory in plugin_dirs or []:
        for path in sorted(Path(directory).glob("*.py")):
            import_file(path, "speckd_plugin")
    return METHODS


def method_defaults(name: str) -> dict[str, Any]:
    """The `method.*` overrides of a registered method (for config.build_config)."""
    return {f"method.{key}": value for key, value in METHODS.get(name).defaults.items()}
