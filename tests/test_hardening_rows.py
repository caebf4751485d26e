"""Every field a prompt renders is a string: a null, list or object field fails naming the file, the line
and the field, in `run` and in `tasks validate`; a blank or absent input field keeps the plain template."""

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli

from speckd_bench.config.run_config import DataConfig
from speckd_bench.data.rows import load_split
from speckd_bench.data.tasks import TASKS

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Red."}
DOLLY_YAML = Path(__file__).resolve().parents[1] / "tasks" / "dolly.yaml"


def mirror(root: Path, *rows: dict) -> Path:
    (root / "dolly").mkdir(parents=True)
    (root / "dolly" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize(
    ("field", "value"),
    [("instruction", None), ("instruction", ["a", "b"]), ("input", {"k": "v"}), ("input", ["x"])],
)
def test_a_prompt_field_that_is_not_a_string_fails_in_tasks_validate(
    tmp_path, monkeypatch, capsys, field, value
):
    root = mirror(tmp_path / "m", GOOD, {**GOOD, field: value})
    (tmp_path / "dolly.yaml").write_text(DOLLY_YAML.read_text())
    code, err = cli(monkeypatch, capsys, ["tasks", "validate", tmp_path / "dolly.yaml", "--data-dir", root])
    assert_one_line_error(code, err, "dev.jsonl:2", f"prompt field {field!r}", "must be a string")
    assert "all render" not in capsys.readouterr().out


def test_a_null_prompt_field_fails_run_before_any_model_loads(tmp_path, monkeypatch, capsys):
    root = mirror(tmp_path / "m", GOOD, {**GOOD, "instruction": None})
    args = ["run", "--preset", "tiny", "--method", "fkl", "--quiet", "--data-dir", root]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", tmp_path / "res"])
    assert_one_line_error(code, err, "dev.jsonl:2", "prompt field 'instruction'")


def test_a_blank_null_or_absent_input_keeps_the_plain_template(tmp_path):
    rows = [GOOD, {**GOOD, "input": None}, {k: v for k, v in GOOD.items() if k != "input"}]
    split = load_split(TASKS.get("dolly"), "train", DataConfig(data_dir=str(mirror(tmp_path, *rows))))
    prompts = {TASKS.get("dolly").render(r) for r in split.rows}
    assert len(prompts) == 1 and "### Input" not in prompts.pop()
