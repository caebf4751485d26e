"""Options shared by several command groups, and the parsing of the values that need more than typer."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated

import typer
import yaml

from speckd_bench.plugin_dirs import builtin_dir, env_plugin_dirs

PluginsOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugins", help="Directory of task YAML / method .py plugins (repeatable)."),
]
MirrorOpt = Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")]

NO_TRACKER, EVERY_TRACKER = "none", "all"


def _task_names() -> list[str]:
    """The `name:` of every task file in the built-in and $SPECKD_PLUGINS folders, read without importing
    the task registry (which imports torch): shell completion must answer at once."""
    names = []
    for folder in [builtin_dir("tasks"), *env_plugin_dirs()]:
        for path in sorted(folder.glob("*.y*ml")):
            try:
                tree = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(tree, dict) and isinstance(tree.get("name"), str):
                names.append(tree["name"])
    return names


def _loop_keys(tree: ast.Module, var: str) -> list[str]:
    """The string keys of a module-level dict literal that a `for var[, ...] in DICT[.items()]` loop walks."""
    dicts = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    for loop in ast.walk(tree):
        if not isinstance(loop, ast.For):
            continue
        first = loop.target.elts[0] if isinstance(loop.target, ast.Tuple) else loop.target
        source = (
            loop.iter.func.value if isinstance(loop.iter, ast.Call) else loop.iter
        )  # DICT.items() or DICT
        if getattr(first, "id", None) == var and getattr(source, "id", None) in dicts:
            keys = dicts[source.id].keys
            return [k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return []


def _method_names() -> list[str]:
    """The names given to `register_method(Method(name=...))` in the built-in and $SPECKD_PLUGINS method
    files (a string, or the keys of the dict a loop registers from), read without importing them."""
    files = [Path(__file__).parents[1] / "methods" / "speckd.py"]
    files += [
        p for folder in [builtin_dir("baselines"), *env_plugin_dirs()] for p in sorted(folder.glob("*.py"))
    ]
    names: list[str] = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "register_method"
        ]
        for kw in (
            kw
            for call in calls
            for inner in ast.walk(call)
            if isinstance(inner, ast.Call)
            for kw in inner.keywords
        ):
            if kw.arg != "name":
                continue
            if isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                names.append(kw.value.value)
            elif isinstance(kw.value, ast.Name):
                names += _loop_keys(tree, kw.value.id)
    return list(dict.fromkeys(names))


def complete_tasks(incomplete: str) -> list[str]:
    """Shell completion of --task: the task names that start with what is typed."""
    return [name for name in _task_names() if name.startswith(incomplete)]


def complete_methods(incomplete: str) -> list[str]:
    """Shell completion of --method: the method names that start with what is typed."""
    return [name for name in _method_names() if name.startswith(incomplete)]


def _complete_trackers(incomplete: str) -> list[str]:
    """Shell completion of --report-to: the last comma-separated name."""
    from speckd_bench.engine.tracking import tracker_names

    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    names = [EVERY_TRACKER, NO_TRACKER, *tracker_names()]
    return [prefix + name for name in names if name.startswith(last)]


ReportToOpt = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        metavar="<all|none|NAME,...>",
        autocompletion=_complete_trackers,
        help="Experiment trackers: all (every tracker whose package is installed), none (the default), or "
        "names, comma-separated, of accelerate's: aim, clearml, comet_ml, dvclive, mlflow, swanlab, "
        "tensorboard, trackio, wandb. Logs the config, training-log rows and final metrics; local files in "
        "<run>/trackers.",
    ),
]


def discover(plugins: list[Path] | None) -> None:
    """Register the tasks and methods of the built-in, installed and given plugin folders."""
    from speckd_bench.plugin_loading import load_plugins

    load_plugins(plugins)


def resolve_report_to(text: str | None) -> list[str]:
    """--report-to as tracker names: `all` adds every available tracker; unknown or uninstalled names fail
    in one line (a UserError)."""
    from speckd_bench.engine.tracking import parse_report_to

    names = [name.strip() for name in (text or "").split(",")]
    if EVERY_TRACKER in names:
        from accelerate.tracking import get_available_trackers

        names = [name for name in names if name != EVERY_TRACKER] + [str(t) for t in get_available_trackers()]
    return parse_report_to(",".join(names))


def sweep_run_ids(sweep: Path | None, results_dir: Path) -> set[str] | None:
    """The complete runs of a sweep file in results_dir (saying on stderr how many of its runs are not
    done), or None without a sweep file: `report --sweep` and `power --sweep` take exactly these."""
    if sweep is None:
        return None
    from speckd_bench.progress import warn
    from speckd_bench.sweep.status import done_run_ids

    run_ids, note = done_run_ids(sweep, results_dir)
    if note:
        warn(note)
    return run_ids
