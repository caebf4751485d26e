"""The package's shape, read from the source (ast; nothing imported): no import circles, no function-local
imports of project modules, the layering rules of docs/architecture.md, and its generated package graph."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("package_graph", ROOT / "docs" / "package_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


graph = _load_graph()
IMPORTS = graph.imports()

# The command modules import the library inside their command functions: importing it loads torch and
# transformers (seconds), which `speckd-bench --help`, shell completion and usage errors must not wait for.
# Every other module imports at module level: a local import there would only hide a dependency.
LAZY_IMPORTERS = ("cli",)


GROUND_FLOOR = ["", *graph.GROUND_FLOOR]  # "" is the package's own __init__
SUBPACKAGES = sorted(p.name for p in (ROOT / "speckd_bench").iterdir() if (p / "__init__.py").is_file())
# Layer -> the layers it must not import. Lower layers know nothing of the ones that drive them.
FORBIDDEN: dict[str, list[str]] = {
    **{module: SUBPACKAGES for module in GROUND_FLOOR},
    **{
        low: ["engine", "leaderboard", "publish", "sweep", "cli"]
        for low in ("api", "config", "data", "models", "loss")
    },
    "engine": ["cli", "leaderboard", "publish"],
    "leaderboard": ["engine", "cli"],
}


def _short(module: str) -> str:
    """speckd_bench.cli.app -> cli.app; the package itself -> ""."""
    return module.removeprefix(graph.PACKAGE).removeprefix(".")


def _unit(module: str) -> str:
    """What a rule in FORBIDDEN names: a ground-floor module by its name, anything else by subpackage."""
    short = _short(module)
    return short if short in GROUND_FLOOR else short.split(".")[0]


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm), each sorted."""
    succ: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in list(succ):
        if v not in index:
            visit(v)
    return found


def layering_violations(imports: list) -> list[str]:
    """Every import that breaks a FORBIDDEN rule, as 'file:line: source imports target (rule)'."""
    broken = []
    for imp in imports:
        source, target = _unit(imp.source), _short(imp.target)
        for banned in FORBIDDEN.get(source, ()):
            if target == banned or target.startswith(banned + "."):
                where = f"{_short(imp.source).replace('.', '/') or '__init__'}.py:{imp.line}"
                rule = f"{source or '__init__'} must not use {banned}"
                broken.append(f"{where}: {_short(imp.source)} imports {target} ({rule})")
    return broken


def test_the_graph_reader_sees_the_package() -> None:
    """Guards the tests below against passing on an empty graph (a moved package, a broken reader)."""
    edges = {(_short(i.source), _short(i.target)) for i in IMPORTS}
    assert ("engine.recipe", "engine.trainer") in edges
    assert ("__main__", "cli.app") in edges
    assert len(IMPORTS) > 200


def test_reader_on_a_made_up_package(tmp_path: Path) -> None:
    """Relative, aliased, `from package import module` and function-local imports, resolved to modules."""
    pkg = tmp_path / graph.PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "a.py").write_text(
        textwrap.dedent(
            """
            import speckd_bench.errors as e
            from speckd_bench.sub.b import thing
            def f():
                from ..errors import UserError
            """
        )
    )
    (pkg / "sub" / "b.py").write_text("from .a import x\n")
    found = {(_short(i.source), _short(i.target), i.local) for i in graph.imports(tmp_path)}
    assert found == {
        ("sub", "sub.b", False),
        ("sub.a", "errors", False),
        ("sub.a", "sub.b", False),
        ("sub.a", "errors", True),
        ("sub.b", "sub.a", False),
    }
    assert cycles({(s, t) for s, t, _ in found}) == [["sub.a", "sub.b"]]


def test_no_import_circles() -> None:
    """Counting function-local imports too: a local import that only dodges a circle still is one."""
    edges = {(_short(i.source), _short(i.target)) for i in IMPORTS if i.source != i.target}
    assert cycles(edges) == []


def test_no_function_local_project_imports() -> None:
    lazy = [i for i in IMPORTS if i.local and _short(i.source).split(".")[0] in LAZY_IMPORTERS]
    assert lazy, "the command modules import the library lazily (else LAZY_IMPORTERS is stale)"
    hidden = sorted(
        f"{_short(i.source)}:{i.line} imports {_short(i.target) or graph.PACKAGE} in a function"
        for i in IMPORTS
        if i.local and _short(i.source).split(".")[0] not in LAZY_IMPORTERS
    )
    assert not hidden, "import these at module level:\n" + "\n".join(hidden)


def test_layering_rules_catch_a_violation() -> None:
    bad = graph.Import("speckd_bench.loss.objective", "speckd_bench.engine.trainer", 7, False)
    fine = graph.Import("speckd_bench.engine.trainer", "speckd_bench.loss.objective", 7, False)
    ground = graph.Import("speckd_bench.errors", "speckd_bench.config.run_config", 3, True)
    assert layering_violations([bad, fine, ground]) == [
        "loss/objective.py:7: loss.objective imports engine.trainer (loss must not use engine)",
        "errors.py:3: errors imports config.run_config (errors must not use config)",
    ]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN), ids=lambda layer: layer or "__init__")
def test_layering(layer: str) -> None:
    """docs/architecture.md's layering rules (function-local imports count)."""
    broken = layering_violations([i for i in IMPORTS if _unit(i.source) == layer])
    assert not broken, "\n".join(broken)


def test_the_documented_package_graph_is_current() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert graph.current_block(text) == graph.block(IMPORTS), "run: python docs/package_graph.py --write"
