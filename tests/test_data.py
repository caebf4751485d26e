"""Rows -> prompts/targets -> batches; errors for bad data."""

import json

import pytest

from speckd_bench.config.run_config import DataConfig
from speckd_bench.data.examples import IGNORE, Example, build_examples, collate
from speckd_bench.data.rows import load_rows, read_jsonl
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.errors import UserError


def test_labels_mask_prompt_and_padding_but_keep_eos_when_pad_equals_eos():
    eos = pad = 2
    batch = collate([Example([5, 6, 7], [8, 9, eos], "p", ["r"]), Example([5], [8, eos], "p", ["r"])], pad)
    # Row 0: positions 2, 3, 4 predict 8, 9, eos; position 5 is the last token and predicts nothing.
    assert batch.labels[0].tolist() == [IGNORE, IGNORE, 8, 9, eos, IGNORE]
    assert batch.labels[1].tolist() == [8, eos, IGNORE, IGNORE, IGNORE, IGNORE]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch.n_targets == 5


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{not json}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_row_missing_a_field_names_file_and_line(tmp_path):
    (tmp_path / "dolly").mkdir()
    good = {"instruction": "x", "input": "", "output": "y"}
    rows = [good, {"instruction": "x", "input": ""}]
    (tmp_path / "dolly" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = discover_tasks().get("dolly")
    with pytest.raises(UserError, match=r"valid.jsonl:2: row lacks field 'output'"):
        load_rows(task, "eval", DataConfig(data_dir=str(tmp_path)))


def test_missing_mirror_file_says_which_file_and_which_flag(tmp_path):
    task = discover_tasks().get("dolly")
    with pytest.raises(UserError, match=r"dolly/valid.jsonl not found .* pass --data-dir"):
        load_rows(task, "eval", DataConfig(data_dir=str(tmp_path)))


def test_real_dolly_rows_render_the_minillm_prompt(real_data):
    task = discover_tasks().get("dolly")
    rows = load_rows(task, "eval", DataConfig(data_dir=str(real_data)))
    assert len(rows) == 500
    assert all(task.render(r) == r["prompt"] for r in rows)
    assert len(load_rows(task, "train", DataConfig(data_dir=str(real_data)))) == 1000


def test_prompts_are_cut_from_the_left_and_responses_end_with_eos():
    class Tok:
        eos_token_id = 2

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [10 + len(w) for w in text.split()]}

    task = discover_tasks().get("dolly")
    row = {"instruction": "word " * 50, "input": "", "output": "a bb ccc"}
    (ex,) = build_examples(task, [row], Tok(), DataConfig(max_length=40, max_prompt_length=8))
    assert len(ex.prompt_ids) == 8
    assert ex.target_ids == [11, 12, 13, 2]
