"""Plugins and provenance: records say where each task came from, tables never pool runs of differing task
files, SPECKD_PLUGINS loads methods, the lm-eval export is portable, names render safely in every format."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli
from synthetic_records import write_run

from speckd_bench.cli.app import main
from speckd_bench.leaderboard.report import build_sections, render
from speckd_bench.records.store import load_records

DOLLY = Path(__file__).resolve().parents[1] / "tasks" / "dolly.yaml"


def plugin_task(folder: Path, name: str, hook: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = DOLLY.read_text().replace("name: dolly", f"name: {name}")
    if hook:
        (folder / f"{name}.py").write_text("def extract_prediction(output):\n    return output.strip()\n")
        text += f"hook: {name}.py\n"
    (folder / f"{name}.yaml").write_text(text)
    return folder


def test_provenance_of_a_plugin_and_a_builtin_task(tmp_path):
    from speckd_bench.data.tasks import TASKS, discover_tasks, provenance, task_sources

    plugins = plugin_task(tmp_path / "plugins", "probe_task")
    discover_tasks([plugins])
    source = provenance(TASKS.get("probe_task"))
    assert source["source"] == "plugin" and source["plugin_dir"] == str(plugins)
    assert (source["file"], source["hook"]) == ("probe_task.yaml", "probe_task.py")
    assert source["metrics"] == ["rougeL"] and "{instruction}" in source["prompt"]
    builtin = task_sources(["dolly"])["dolly"]
    assert (
        builtin["source"] == "builtin" and builtin["plugin_dir"] is None and builtin["file"] == "dolly.yaml"
    )
    (plugins / "probe_task.py").write_text("def extract_prediction(output):\n    return output\n")
    discover_tasks([plugins])
    assert provenance(TASKS.get("probe_task"))["digest"] != source["digest"]


def edit(record_dir: Path, change) -> None:
    record = json.loads((record_dir / "record.json").read_text())
    change(record)
    (record_dir / "record.json").write_text(json.dumps(record))


def digest(value: str):
    return lambda r: r["data"].update(task_sources={"dolly": {"source": "builtin", "digest": value}})


def test_runs_of_differing_task_files_are_never_pooled(tmp_path):
    out = tmp_path / "results"
    for seed in (1, 2, 3, 4):
        write_run(out, method="fkl", seed=seed, scores={10: [1.0, 2.0]}, losses=[1.0])
    for i, run in enumerate(sorted((out / "runs").iterdir())):
        edit(run, digest("aaa" if i < 2 else "bbb"))
    sections = build_sections(load_records(out).records, out)
    assert sorted(len(g.runs) for s in sections for g in s.groups) == [2, 2]
    assert any("task_digest" in s.description for s in sections)


def test_eval_of_a_plugin_run_without_its_plugins_names_the_dir(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: [1.0]}, losses=[1.0])
    (run,) = (out / "runs").iterdir()
    source = {"gone_task": {"source": "plugin", "plugin_dir": "/srv/plugins", "digest": "d"}}
    edit(run, lambda r: (r.update(task="gone_task"), r["data"].update(task_sources=source)))
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "config.json").write_text("{}")
    code, err = cli(monkeypatch, capsys, ["eval", "--run", run, "--results-dir", out])
    assert_one_line_error(code, err, "from plugin directory /srv/plugins", "pass --plugins /srv/plugins")


def test_speckd_plugins_loads_methods(tmp_path, monkeypatch):
    from speckd_bench.api.methods import METHODS
    from speckd_bench.methods.discovery import discover_methods

    (tmp_path / "env_method.py").write_text(
        "from speckd_bench.api.methods import Method, register_method\n"
        "register_method(Method(name='env_probe', description='d', paper='-'))\n"
    )
    monkeypatch.setenv("SPECKD_PLUGINS", str(tmp_path))
    discover_methods()
    assert "env_probe" in METHODS


def test_tasks_marks_plugin_tasks(tmp_path, monkeypatch, capsys):
    plugins = plugin_task(tmp_path / "plugins", "marked_task", hook=False)
    monkeypatch.setattr(sys, "argv", ["speckd-bench", "tasks", "--plugins", str(plugins)])
    main()
    lines = capsys.readouterr().out.splitlines()
    assert any("marked_task" in line and "plugin" in line for line in lines)
    assert any("dolly " in line and "built-in" in line for line in lines)
    assert max(map(len, lines)) > 80  # not folded at 80 columns when stdout is not a terminal


def test_table_json_carries_every_metric(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: [1.0]}, losses=[1.0])
    (run,) = (out / "runs").iterdir()
    edit(run, lambda r: r["metrics"]["dolly"]["after"]["metrics"].update(exact_match=50.0))
    monkeypatch.setattr(sys, "argv", ["speckd-bench", "table", "--results-dir", str(out), "--format", "json"])
    main()
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "method"]
    assert row["metrics"]["exact_match"]["mean"] == 50.0 and row["metrics"]["rougeL"]["mean"] == 1.0


def test_names_render_safely_in_md_latex_and_csv(tmp_path):
    out = tmp_path / "results"
    write_run(out, method="fkl", seed=1, scores={10: [1.0]}, losses=[1.0])
    (run,) = (out / "runs").iterdir()
    edit(run, lambda r: r.update(method="a|b_c<d>&e%f\nnext"))
    sections = build_sections(load_records(out).records, out)
    md = render(sections, "md")
    row = next(line for line in md.splitlines() if "a\\|b" in line)
    assert "a\\|b\\_c\\<d\\>&e%f next" in row and row.count(" | ") == md.splitlines()[2].count(" | ")
    assert r"a\textbar{}b\_c\textless{}d\textgreater{}\&e\%f next" in render(sections, "latex")
    assert "a|b_c<d>&e%f\nnext" in render(sections, "csv")
    assert "a|b_c&lt;d&gt;&amp;e%f" in render(sections, "html")


def test_lm_eval_export_is_portable(tmp_path, data_dir):
    from speckd_bench.config.run_config import DataConfig
    from speckd_bench.data.tasks import TASKS, discover_tasks
    from speckd_bench.evaluation.lmeval import export_tasks

    discover_tasks()
    export_tasks(
        [TASKS.get("dolly"), TASKS.get("gsm8k")],
        tmp_path / "out",
        DataConfig(data_dir=str(data_dir)),
        max_rows=2,
    )
    moved = shutil.move(tmp_path / "out", tmp_path / "elsewhere")
    for path in Path(moved).rglob("*"):
        if path.suffix in (".yaml", ".py"):
            assert str(tmp_path) not in path.read_text() and "/work" not in path.read_text(), path
    spec = importlib.util.spec_from_file_location("moved_scoring", Path(moved) / "speckd_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.dolly_dataset(cache_dir=str(tmp_path / "cache"), version=1.0)["test"]
    assert len(rows) == 2
    assert (
        module.dolly({"references": [rows[0]["references"][0]]}, [rows[0]["references"][0]])["rougeL"]
        == 100.0
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("register_method(Method(name='../../../escaped', description='d', paper='-'))", "is not allowed"),
        ("import sys\nsys.exit(0)", "SystemExit"),
        ("raise RuntimeError('boom')", "RuntimeError: boom"),
    ],
)
def test_a_bad_method_plugin_is_one_line_exit_2(tmp_path, monkeypatch, capsys, body, message):
    header = "from speckd_bench.api.methods import Method, register_method\n"
    (tmp_path / "bad_method.py").write_text(f"{header}{body}\n")
    args = ["run", "--plugins", str(tmp_path), "--preset", "tiny", "--results-dir", str(tmp_path / "out")]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, "bad_method.py failed to import", message)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escaped").exists()
