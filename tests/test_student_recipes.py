"""Students cut from the teacher: layers:N (evenly spaced) and block:N (the first N-1 layers and the last),
their kept indices, the models they build, what the record says about them, bad values, and the committed
sweep that measures their inits."""

from collections import defaultdict
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, cli
from test_errors import TINY, WORDS, run_dirs, word_tokenizer
from tiny_models import tiny_llama

from speckd_bench.config.run_config import ModelConfig
from speckd_bench.errors import UserError
from speckd_bench.models.loading import (
    STUDENT_RECIPES,
    decoder_layers,
    load_pair,
    student_from_teacher,
    student_recipe,
)
from speckd_bench.sweep.grid import load_points


@pytest.mark.parametrize(
    ("recipe", "n_total", "n_keep", "kept"),
    [
        ("layers", 30, 6, [0, 6, 12, 17, 23, 29]),
        ("block", 30, 6, [0, 1, 2, 3, 4, 29]),
        ("layers", 30, 4, [0, 10, 19, 29]),
        ("block", 30, 4, [0, 1, 2, 29]),
        ("layers", 30, 1, [0]),
        ("block", 30, 1, [29]),
        ("block", 30, 30, list(range(30))),
        ("layers", 4, 3, [0, 2, 3]),
        ("block", 4, 3, [0, 1, 3]),
    ],
)
def test_kept_indices(recipe, n_total, n_keep, kept):
    assert STUDENT_RECIPES[recipe](n_total, n_keep) == kept


@pytest.mark.parametrize(
    ("student", "parsed"),
    [("layers:6", ("layers", 6)), ("block:6", ("block", 6)), ("HuggingFaceTB/SmolLM2-135M", None)],
)
def test_student_recipe_parses_recipes_only(student, parsed):
    assert student_recipe(student) == parsed


@pytest.mark.parametrize(("recipe", "kept"), [("layers", [0, 2, 3]), ("block", [0, 1, 3])])
def test_tiny_teacher_cut_keeps_those_layers_and_runs(recipe, kept):
    teacher = tiny_llama(0, num_hidden_layers=4)
    student, keep = student_from_teacher(teacher, recipe, 3)
    assert keep == kept
    assert student.config.num_hidden_layers == 3 and len(decoder_layers(student)) == 3
    assert len(decoder_layers(teacher)) == 4  # the teacher is copied, not cut
    for new_idx, (layer, old_idx) in enumerate(zip(decoder_layers(student), kept, strict=True)):
        assert layer.self_attn.layer_idx == new_idx
        source = decoder_layers(teacher)[old_idx].state_dict()
        assert all(torch.equal(t, source[name]) for name, t in layer.state_dict().items())
    ids = torch.tensor([[3, 5, 7, 9]])
    assert student(input_ids=ids).logits.shape == (1, 4, 40)
    out = student.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)  # the KV cache per layer
    assert out.shape == (1, 7)


def _teacher_dir(path):
    tiny_llama(0, num_hidden_layers=4, pad_token_id=1, eos_token_id=2).save_pretrained(path)
    word_tokenizer(WORDS).save_pretrained(path)
    return path


@pytest.mark.parametrize(("student", "kept"), [("layers:3", [0, 2, 3]), ("block:3", [0, 1, 3])])
def test_record_names_the_kept_layers(tmp_path, student, kept):
    cfg = ModelConfig(str(_teacher_dir(tmp_path / "teacher")), student, "float32")
    pair = load_pair(cfg, torch.device("cpu"))
    assert pair.info["student"] == student
    assert pair.info["student_init"] == f"teacher layers {kept} of 4, embeddings and head copied"
    assert len(decoder_layers(pair.student)) == 3


@pytest.mark.parametrize(
    ("student", "message"),
    [
        ("block:0", "model.student=block:0 needs 1 <= N <= 4 (the teacher's layers)"),
        ("block:99", "model.student=block:99 needs 1 <= N <= 4 (the teacher's layers)"),
        ("block:x", "model.student='block:x': expected block:N with an integer N"),
        ("layers:", "model.student='layers:': expected layers:N with an integer N"),
    ],
)
def test_bad_recipe_values(tmp_path, student, message):
    cfg = ModelConfig(str(_teacher_dir(tmp_path / "teacher")), student, "float32")
    with pytest.raises(UserError) as exc:
        load_pair(cfg, torch.device("cpu"))
    assert str(exc.value) == message


def test_bad_recipe_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys, data_dir):
    teacher = _teacher_dir(tmp_path / "teacher")
    capsys.readouterr()  # save_pretrained's progress bar
    args = [*TINY, "--teacher", teacher, "--student", "block:99", "--data-dir", data_dir]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", tmp_path / "results"])
    assert_one_line_error(code, err, "model.student=block:99 needs 1 <= N <= 4")
    assert run_dirs(tmp_path / "results") == []


def test_the_committed_sweep_measures_each_recipe_init_without_kd(tmp_path):
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "student-recipes.yaml"
    _, _, points = load_points(sweep, tmp_path)
    warm_starts = defaultdict(set)
    for point in points:
        s = point.settings
        assert (s["preset"], s["method.name"], s["train.max_steps"]) == ("default", "sft", "1")
        assert student_recipe(s["model.student"]) is not None
        warm_starts[(s["train.init_rows"], s["train.init_sft_epochs"])].add(s["model.student"])
    every = {f"{recipe}:{n}" for recipe in STUDENT_RECIPES for n in (4, 6, 8)}
    assert warm_starts == {
        ("256", "1"): {"layers:6", "block:6"},  # the preset's current warm start, as the baseline
        ("256", "2"): every,
        ("1000", "1"): every,
        ("1000", "2"): {"layers:4", "block:4"},  # the only depth within the demo budget
        ("1000", "3"): {"layers:4"},  # beyond the budget, once: do passes alone reach the bar?
    }
