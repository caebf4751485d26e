"""Task schema, built-in tasks over the real mirror, and the settings tasks and suites bring to a run."""

import functools
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.config.run_config import DataConfig, build_config, parse_sets
from speckd_bench.data.rows import load_split
from speckd_bench.data.tasks import SUITES, TASKS, discover_tasks, load_plugin_file, run_defaults
from speckd_bench.errors import UserError
from speckd_bench.methods.discovery import method_config

runner = CliRunner()
BUILTIN = {
    "dolly", "self_inst", "vicuna", "s_ni", "u_ni", "scitldr", "dialogsum", "xsum", "cnn_dailymail",
    "gsm8k", "wmt23_de_en", "wmt23_en_de",
}  # fmt: skip
MINIMAL = {
    "name": "mini",
    "kind": "instruction",
    "description": "a test task",
    "splits": {"eval": {"mirror": "mini/eval.jsonl"}},
    "prompt": {"template": "Q: {question}\nA:"},
    "reference": "answer",
}

resolve = functools.partial(build_config, method_config=method_config)


def write_task(tmp_path, tree, name="task.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def test_builtin_tasks_and_the_minillm_suite_are_registered():
    builtin_dir = Path(discover_tasks().get("dolly").path).parent
    assert {name for name, t in TASKS.items() if Path(t.path).parent == builtin_dir} == BUILTIN
    assert SUITES.get("minillm").sets == ("dolly", "self_inst", "vicuna", "s_ni", "u_ni")
    assert SUITES.get("minillm").decoding == "minillm"


def test_a_minimal_task_parses_with_defaults(tmp_path):
    spec = load_plugin_file(write_task(tmp_path, MINIMAL))
    assert (spec.metrics, spec.decoding, spec.target_field, spec.lm_eval) == (
        ("rougeL",),
        "greedy",
        "answer",
        (),
    )
    assert spec.render({"question": "2+2?"}) == "Q: 2+2?\nA:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reference": None}, r"key 'reference' is missing"),
        ({"kind": "instruct"}, r"key 'kind' is 'instruct' \(did you mean instruction\?\)"),
        ({"promt": {"template": "x"}}, r"key 'promt' is not a known field \(did you mean prompt\?\)"),
        ({"name": "my task"}, r"key 'name' is 'my task': use a-z, 0-9, _ and -"),
        ({"splits": {"train": {"mirror": "a.jsonl"}}}, r"key 'splits' needs an eval split"),
        ({"splits": {"eval": {}}}, r"key 'splits.eval' needs `mirror`.* or `hub`"),
        ({"splits": {"eval": {"hub": {"repo": "x/y"}}}}, r"'splits.eval.hub' needs either `repo` and `file`"),
        ({"splits": {"eval": {"mirror": 3}}}, r"key 'splits.eval.mirror' must be a file path"),
        ({"prompt": {"template": "Q: {question"}}, r"key 'prompt.template' is not a valid template"),
        ({"prompt": {"template": "Q: {}"}}, r"key 'prompt.template' has an empty \{\} placeholder"),
        ({"metrics": ["rougeLL"]}, r"key 'metrics' names unknown metric 'rougeLL' \(did you mean rougeL"),
        (
            {"decoding": "beam"},
            r"key 'decoding' is 'beam' \(expected: a decoding preset \(greedy, minillm\)\)",
        ),
        ({"defaults": {"train.lr": 1}}, r"key 'defaults.train.lr' is not a data.\* or eval.\* setting"),
        ({"defaults": {"eval.max_new_token": 9}}, r"key 'defaults' is invalid: unknown config key"),
        ({"defaults": {"eval.max_new_tokens": "many"}}, r"eval.max_new_tokens expects an integer"),
        ({"fields": {"doc": {"join": " "}}}, r"key 'fields.doc.from' is missing"),
        ({"hook": "missing.py"}, r"key 'hook' names .*missing.py, which is not a .py file"),
        ({"reference": []}, r"key 'reference' must be a string or a non-empty list of strings"),
    ],
)
def test_schema_errors_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    tree = {k: v for k, v in {**MINIMAL, **change}.items() if v is not None}
    with pytest.raises(UserError, match=message) as exc:
        load_plugin_file(write_task(tmp_path, tree, "broken.yaml"))
    assert str(exc.value).startswith(str(tmp_path / "broken.yaml"))


def test_a_broken_hook_fails_in_one_line(tmp_path):
    (tmp_path / "hook.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match=r"hook.py failed to import: RuntimeError: boom"):
        load_plugin_file(write_task(tmp_path, {**MINIMAL, "hook": "hook.py"}))
    (tmp_path / "hook.py").write_text("extract_prediction = 'last number'\n")
    with pytest.raises(
        UserError, match=r"key 'hook' .*hook.py defines extract_prediction, but not as a function"
    ):
        load_plugin_file(write_task(tmp_path, {**MINIMAL, "hook": "hook.py"}))


def test_field_mapping_joins_lists_collects_fields_and_walks_dotted_paths(tmp_path):
    tree = {
        **MINIMAL,
        "fields": {"question": {"from": "parts", "join": " "}, "answers": ["a1", "a2"], "lang": "meta.lang"},
        "prompt": {"template": "{lang}: {question}"},
        "reference": "answers",
    }
    spec = load_plugin_file(write_task(tmp_path, tree))
    (tmp_path / "mini").mkdir()
    row = {"parts": ["Two", "plus two?"], "a1": "four", "a2": ["4", "IV"], "meta": {"lang": "en"}}
    (tmp_path / "mini" / "eval.jsonl").write_text(json.dumps(row) + "\n")
    (loaded,) = load_split(spec, "eval", DataConfig(data_dir=str(tmp_path))).rows
    assert spec.render(loaded) == "en: Two plus two?"
    assert spec.references(loaded) == ["four", "4", "IV"]
    assert spec.target(loaded) == "four"


def test_plain_text_parallel_files_are_rows_and_must_align(tmp_path):
    tree = {
        **MINIMAL,
        "splits": {"eval": {"mirror": {"source": "mt/src.de", "reference": "mt/ref.en"}}},
        "prompt": {"template": "Translate: {source}"},
        "reference": "reference",
    }
    spec = load_plugin_file(write_task(tmp_path, tree))
    (tmp_path / "mt").mkdir()
    (tmp_path / "mt" / "src.de").write_text("Hallo Welt\nGuten Morgen\n")
    (tmp_path / "mt" / "ref.en").write_text("Hello world\nGood morning\n")
    rows = load_split(spec, "eval", DataConfig(data_dir=str(tmp_path))).rows
    assert [(spec.render(r), spec.references(r)) for r in rows] == [
        ("Translate: Hallo Welt", ["Hello world"]),
        ("Translate: Guten Morgen", ["Good morning"]),
    ]
    (tmp_path / "mt" / "ref.en").write_text("Hello world\n")
    with pytest.raises(UserError, match=r"aligned files differ in line count \(.*mt/ref.en has 1"):
        load_split(spec, "eval", DataConfig(data_dir=str(tmp_path)))


def test_hub_datasets_load_through_datasets_with_their_own_field_mapping(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    hub = tmp_path / "hub-dataset"  # datasets.load_dataset reads a local folder like a hub id
    hub.mkdir()
    (hub / "test.jsonl").write_text(json.dumps({"q": "2+2?", "label": "4"}) + "\n")
    source = {"dataset": str(hub), "split": "test", "fields": {"question": "q", "answer": "label"}}
    tree = {**MINIMAL, "splits": {"eval": {"mirror": "absent.jsonl", "hub": source}}}
    spec = load_plugin_file(write_task(tmp_path, tree))
    rows = load_split(spec, "eval", DataConfig(data_dir=str(tmp_path)))
    assert rows.source.startswith("hub dataset") and str(hub) in rows.source
    assert [(spec.render(r), spec.references(r)) for r in rows.rows] == [("Q: 2+2?\nA:", ["4"])]


def test_hub_only_task_offline_says_what_to_do():
    with pytest.raises(
        UserError, match=r"task u_ni: hub file MiniLLM/uinst:11_/valid.jsonl could not be loaded"
    ):
        load_split(discover_tasks().get("u_ni"), "eval", DataConfig())


MIRROR_ROWS = {
    ("dolly", "eval"): 500, ("dolly", "train"): 1000, ("self_inst", "eval"): 242, ("vicuna", "eval"): 80,
    ("s_ni", "eval"): 1694, ("scitldr", "eval"): 618, ("scitldr", "train"): 1992, ("dialogsum", "eval"): 500,
    ("dialogsum", "train"): 500, ("xsum", "eval"): 10, ("gsm8k", "eval"): 1319, ("gsm8k", "train"): 7473,
    ("wmt23_de_en", "eval"): 549, ("wmt23_en_de", "eval"): 557,
}  # fmt: skip


@pytest.mark.parametrize(("task", "split"), sorted(MIRROR_ROWS))
def test_real_mirror_rows_load_for_every_task(real_data, task, split):
    spec = discover_tasks().get(task)
    rows = load_split(spec, split, DataConfig(data_dir=str(real_data))).rows
    assert len(rows) == MIRROR_ROWS[(task, split)]
    for row in rows:
        assert spec.render(row).strip() and spec.target(row).strip()
        assert all(ref.strip() for ref in spec.references(row))
        if "prompt" in row:  # MiniLLM-processed sets carry the prompt they were scored with
            assert spec.render(row) == row["prompt"]


def test_real_multi_reference_sets_keep_every_reference(real_data):
    cfg = DataConfig(data_dir=str(real_data))
    dialogsum = discover_tasks().get("dialogsum")
    assert all(len(dialogsum.references(r)) == 3 for r in load_split(dialogsum, "eval", cfg).rows)
    scitldr = discover_tasks().get("scitldr")
    counts = {len(scitldr.references(r)) for r in load_split(scitldr, "eval", cfg).rows}
    assert min(counts) >= 2 and max(counts) <= 4
    gsm8k = discover_tasks().get("gsm8k")
    assert all(gsm8k.references(r)[0].lstrip("-").isdigit() for r in load_split(gsm8k, "train", cfg).rows)


def test_task_defaults_sit_below_the_preset_and_the_user():
    discover_tasks()
    c = resolve(overrides={"task": "gsm8k"}, task_defaults=run_defaults)
    assert (c.eval.max_new_tokens, c.data.max_length, c.eval.decoding) == (256, 512, "greedy")
    assert (
        build_config(
            method_config=method_config,
            preset="tiny",
            overrides={"task": "gsm8k"},
            task_defaults=run_defaults,
        ).eval.max_new_tokens
        == 8
    )
    user = build_config(
        method_config=method_config,
        overrides=parse_sets(["task=gsm8k", "eval.max_new_tokens=32"]),
        task_defaults=run_defaults,
    )
    assert user.eval.max_new_tokens == 32
    assert (
        build_config(
            method_config=method_config, overrides={"task": "dolly"}, task_defaults=run_defaults
        ).eval
        == build_config(
            method_config=method_config,
        ).eval
    )


def test_the_minillm_suite_brings_its_sampling_protocol():
    discover_tasks()
    c = build_config(
        method_config=method_config, overrides={"eval.suite": "minillm"}, task_defaults=run_defaults
    )
    assert (c.eval.decoding, c.eval.temperature, c.eval.top_p, c.eval.top_k) == ("sample", 1.0, 1.0, 0)
    assert (c.eval.no_repeat_ngram_size, c.eval.seeds) == (6, [10, 20, 30, 40, 50])
    greedy = build_config(
        method_config=method_config,
        overrides={"eval.suite": "minillm", "eval.decoding": "greedy"},
        task_defaults=run_defaults,
    )
    assert greedy.eval.decoding == "greedy"
    with pytest.raises(UserError, match=r"unknown suite 'minilm' \(did you mean minillm\?\)"):
        build_config(
            method_config=method_config, overrides={"eval.suite": "minilm"}, task_defaults=run_defaults
        )


def test_tasks_listing_shows_sources_and_suites():
    out = runner.invoke(app, ["tasks"]).stdout
    assert all(name in out for name in BUILTIN) and "minillm" in out
    assert "hub" in out and "mirror" in out


def test_tasks_validate_checks_schema_and_mirror_rows(real_data):
    res = runner.invoke(app, ["tasks", "validate", "tasks/gsm8k.yaml", "--data-dir", str(real_data)])
    assert res.exit_code == 0, res.output
    assert "ok: task gsm8k" in res.stdout and "eval: 1319 rows from" in res.stdout
    hub_only = runner.invoke(app, ["tasks", "validate", "tasks/u_ni.yaml"]).stdout
    assert "not in the local mirror; rows not checked" in hub_only
    assert "ok: suite minillm" in runner.invoke(app, ["tasks", "validate", "tasks/suite-minillm.yaml"]).stdout


def test_tasks_validate_reports_a_bad_file_as_a_user_error(tmp_path):
    res = runner.invoke(app, ["tasks", "validate", str(write_task(tmp_path, {**MINIMAL, "kind": "poem"}))])
    assert isinstance(res.exception, UserError) and "key 'kind' is 'poem'" in str(res.exception)
