"""The wheel ships the whole package: every tracked module, the built-in task and method plugins, and each
module imports from the unpacked wheel alone (a hand-kept package list once left out speckd_bench.loss,
so every non-editable install failed on import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "speckd_bench"
PLUGINS = {"tasks": ("tasks", "*.yaml"), "baselines": ("baselines", "*.py")}

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel --no-deps` of a source tree (the same build a user's `pip install .` makes)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = out.glob("*.whl")
    return wheel


def tracked(source: Path, *paths: str) -> list[str]:
    """The files git tracks under `paths` of a checkout."""
    cmd = ["git", "-C", str(source), "ls-files", "--", *paths]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()


def expected_files(source: Path) -> set[str]:
    """What the wheel must hold: every .py of the package, and the built-in plugin files packed under
    speckd_bench/_builtin/ (pyproject.toml's force-include)."""
    files = {p for p in tracked(source, PACKAGE) if p.endswith(".py")}
    for kind, (folder, pattern) in PLUGINS.items():
        for path in tracked(source, folder):
            if Path(path).match(pattern):
                files.add(f"{PACKAGE}/_builtin/{kind}/{Path(path).relative_to(folder)}")
    return files


def modules(files: set[str]) -> list[str]:
    """Dotted names of the package's modules among `files` (plugins and __main__ are not imported)."""
    names = []
    for path in sorted(files):
        parts = Path(path).with_suffix("").parts
        if path.endswith(".py") and "_builtin" not in parts and parts[-1] != "__main__":
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# Run in a child process from the unpacked wheel: import every module, then load the built-in plugins as
# the CLI does; report each module's file, import errors and the plugins found, as JSON.
PROBE = """
import importlib, json, sys, traceback
out = {"files": {}, "errors": {}}
for name in json.loads(sys.argv[1]):
    try:
        out["files"][name] = importlib.import_module(name).__file__
    except Exception:
        out["errors"][name] = traceback.format_exc(limit=1).strip().splitlines()[-1]
try:
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.methods.discovery import discover_methods
    from speckd_bench.plugin_dirs import builtin_dir
    out["tasks"] = sorted(name for name, _ in discover_tasks().items())
    out["methods"] = sorted(name for name, _ in discover_methods().items())
    out["builtin_dirs"] = [str(builtin_dir("tasks")), str(builtin_dir("baselines"))]
except Exception:
    out["errors"]["plugins"] = traceback.format_exc(limit=1).strip().splitlines()[-1]
print(json.dumps(out))
"""


def probe(unpacked: Path, names: list[str], cwd: Path) -> dict:
    """Import `names` with only the unpacked wheel on PYTHONPATH (third-party packages from this
    interpreter), from `cwd` outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(unpacked), "HF_HUB_OFFLINE": "1", "SPECKD_CACHE_DIR": str(cwd)}
    env.pop("SPECKD_PLUGINS", None)
    cmd = [sys.executable, "-c", PROBE, json.dumps(names)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(ROOT, tmp_path_factory.mktemp("dist"))


def test_wheel_holds_every_module_and_builtin_plugin(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = expected_files(ROOT)
    assert {f"{PACKAGE}/loss/objective.py", f"{PACKAGE}/_builtin/tasks/dolly.yaml"} <= expected
    assert not expected - names, f"missing from {wheel.name}: {sorted(expected - names)}"


def test_every_module_imports_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    unpacked, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    zipfile.ZipFile(wheel).extractall(unpacked)
    names = modules(expected_files(ROOT))
    out = probe(unpacked, names, cwd)
    assert not out["errors"], out["errors"]
    outside = {n: f for n, f in out["files"].items() if not Path(f).is_relative_to(unpacked)}
    assert not outside, f"imported from outside the wheel: {outside}"
    assert set(out["files"]) == set(names) and PACKAGE in names
    assert all(Path(d).is_relative_to(unpacked / PACKAGE / "_builtin") for d in out["builtin_dirs"])
    assert {"dolly", "gsm8k"} <= set(out["tasks"]) and {"speckd", "sft", "gkd"} <= set(out["methods"])
