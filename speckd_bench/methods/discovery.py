"""Discovery of methods: the built-in ones (SpecKD here, the baselines/ plugin folder), entry points
and plugin directories; a method's settings object and defaults; checks across settings.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.api.methods import METHODS, Method
from speckd_bench.errors import UserError
from speckd_bench.methods import speckd  # noqa: F401  (registers SpecKD)
from speckd_bench.plugin_dirs import builtin_dir, env_plugin_dirs
from speckd_bench.registry import Registry, import_file


@functools.cache
def _load_builtins() -> None:
    """Import the built-in method plugins (baselines/*.py), as a --plugins directory's files are."""
    for path in sorted(builtin_dir("baselines").glob("*.py")):
        import_file(path, "speckd_builtin")


def discover_methods(plugin_dirs: list[Path] | None = None) -> Registry[Method]:
    """Import the built-in methods, entry points and the *.py files of $SPECKD_PLUGINS and --plugins
    directories (as discover_tasks reads their YAML files); return the registry."""
    _load_builtins()
    for ep in entry_points(group="speckd_bench.methods"):
        ep.load()
    for directory in [*env_plugin_dirs(), *(plugin_dirs or [])]:
        for path in sorted(Path(directory).glob("*.py")):
            import_file(path, "speckd_plugin")
    return METHODS


def check_method(method: Method, mcfg: MethodConfig) -> None:
    """Settings that contradict the method fail before anything loads."""
    if isinstance(mcfg, KDConfig) and mcfg.gate != "none" and not method.uses_teacher:
        raise UserError(
            f"method.gate={mcfg.gate} needs a divergence to the teacher, but {method.name} trains with "
            "cross-entropy; gate a divergence method instead (e.g. --method fkl --set method.gate=speckd)"
        )


def method_config(name: str) -> tuple[MethodConfig, dict[str, Any]]:
    """The settings object of a registered method (its class's defaults) and the method's own defaults
    (config.build_config applies those after the preset)."""
    _load_builtins()
    method = METHODS.get(name)
    return method.config(name=name), {f"method.{key}": value for key, value in method.defaults.items()}


def own_settings(method: Method) -> dict[str, Any]:
    """The defaults that set a method apart: its defaults dict, and the fields its config class adds to or
    changes from the shared class it extends (KDConfig or MethodConfig)."""
    base = KDConfig() if method.uses_teacher else MethodConfig()
    mcfg = method.config(name=method.name)
    own = {
        f.name: getattr(mcfg, f.name)
        for f in dataclasses.fields(mcfg)
        if f.name != "name" and getattr(base, f.name, _MISSING) != getattr(mcfg, f.name)
    }
    return {**own, **method.defaults}


_MISSING = object()
