"""The pieces that make a score readable: degeneracy figures, trivial floors, fidelity to the teacher,
the teacher's dtype by hardware, and an init checkpoint whose identity is exact."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_llama
from typer.testing import CliRunner

import speckd_bench.config.run_config
from speckd_bench.api.metrics import rouge
from speckd_bench.caches import cache_dir
from speckd_bench.cli.app import app
from speckd_bench.config.run_config import build_config
from speckd_bench.data.examples import Example
from speckd_bench.data.tasks import TASKS, discover_tasks
from speckd_bench.evaluation.degeneracy import degeneracy, degenerate_reasons
from speckd_bench.evaluation.fidelity import teacher_forced
from speckd_bench.evaluation.floors import CONSTANTS, floor_scores, template_fields
from speckd_bench.methods.discovery import method_config


def test_degeneracy_figures_by_hand():
    figures = degeneracy(["", "a b a b a b", "the cat sat"])
    assert figures["empty"] == pytest.approx(1 / 3)
    # unigrams a b a b a b the cat sat: 5 distinct of 9; bigrams: ab ba ab ba ab, the-cat cat-sat: 4 of 7
    assert figures["distinct_1"] == pytest.approx(5 / 9)
    assert figures["distinct_2"] == pytest.approx(4 / 7)
    # only "a b a b a b" has 4 words: 4-grams abab baba abab -> 2 distinct of 3
    assert figures["repetition"] == pytest.approx(1 - 2 / 3)
    assert degenerate_reasons(figures) == ["33% empty", "repetition 0.33"]
    assert degenerate_reasons(degeneracy(["one fine answer", "another good reply here"])) == []


def test_floors_choose_the_constant_on_training_references_and_echo_prompt_fields():
    discover_tasks()
    task = TASKS.get("dolly")
    assert template_fields(task) == ["instruction", "input"]
    train = [{"instruction": "q", "input": "", "output": "Yes."}] * 3
    rows = [
        {"instruction": "Say yes please", "input": "", "output": "yes"},
        {"instruction": "Is it so?", "input": "it is so", "output": "it is so"},
    ]
    floors = floor_scores(task, rows, train)
    assert floors["constant"]["output"] == "Yes." and floors["constant"]["chosen_on"] == "train references"
    assert floors["constant"]["chosen_from"] == list(CONSTANTS)
    assert floors["constant"]["metrics"]["rougeL"] == pytest.approx(50.0)  # "yes" matches row 1 only
    assert floors["empty"]["metrics"]["rougeL"] == 0.0
    expected = (rouge("rougeL", "Say yes please", ["yes"]) + rouge("rougeL", "Is it so?", ["it is so"])) / 2
    assert floors["echo_instruction"]["metrics"]["rougeL"] == pytest.approx(expected)
    assert floors["echo_input"]["metrics"]["rougeL"] == pytest.approx(50.0)
    assert floors["echo_input"]["degeneracy"]["empty"] == 0.5


def _examples() -> list[Example]:
    return [Example([3, 4, 5], [6, 7, 1], "p", ["r"]), Example([3, 9], [8, 1], "p", ["r"])]


def test_fidelity_of_the_teacher_to_itself_is_perfect():
    model = tiny_llama(0).eval()
    out = teacher_forced(model, model, _examples(), pad_id=0, vocab_size=40).per_prompt()
    assert out["tf_fkl_prompt"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert out["tf_rkl_prompt"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert out["tf_tvd_prompt"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert out["tf_top1_prompt"] == [100.0, 100.0]


def test_fidelity_matches_a_direct_computation_per_example():
    student, teacher = tiny_llama(1).eval(), tiny_llama(2).eval()
    out = teacher_forced(student, teacher, _examples(), pad_id=0, vocab_size=40).per_prompt()
    for i, ex in enumerate(_examples()):
        ids = torch.tensor([ex.prompt_ids + ex.target_ids])
        positions = slice(len(ex.prompt_ids) - 1, len(ex.prompt_ids) - 1 + len(ex.target_ids))
        with torch.no_grad():
            log_q = torch.log_softmax(student(ids).logits[0, positions].double(), -1)
            log_p = torch.log_softmax(teacher(ids).logits[0, positions].double(), -1)
        fkl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        rkl = (log_q.exp() * (log_q - log_p)).sum(-1).mean()
        agree = (log_p.argmax(-1) == log_q.argmax(-1)).double().mean() * 100
        assert out["tf_fkl_prompt"][i] == pytest.approx(float(fkl), rel=1e-4)
        assert out["tf_rkl_prompt"][i] == pytest.approx(float(rkl), rel=1e-4)
        assert out["tf_top1_prompt"][i] == pytest.approx(float(agree))


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_teacher_dtype_follows_native_bfloat16(monkeypatch, native, expected):
    monkeypatch.setattr(speckd_bench.config.run_config, "native_bf16", lambda: native)
    assert build_config(method_config=method_config).model.teacher_dtype == expected
    assert (
        build_config(
            method_config=method_config, overrides={"model.teacher_dtype": "float32"}
        ).model.teacher_dtype
        == "float32"
    )


def _run(results, data_dir, *extra):
    args = ["run", "--preset", "tiny", "--method", "fkl", "--data-dir", str(data_dir)]
    res = CliRunner().invoke(app, [*args, "--results-dir", str(results), "--quiet", *extra])
    assert res.exit_code == 0, (res.output, res.exception)
    (path,) = (results / "runs").glob("*/record.json")
    return json.loads(path.read_text())


def _init_weights(record):
    return load_file(str(cache_dir() / record["init"]["path"] / "student.safetensors"))


@pytest.mark.slow
def test_a_max_steps_probe_never_changes_the_init_of_a_later_run(
    tmp_path, monkeypatch, fresh_cache, data_dir
):
    """The KD stage's step budget is not the warm start's: a 1-step probe and a full run share one init,
    the same one a clean cache builds."""
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("probe-first")))
    probe = _run(tmp_path / "probe", data_dir, "--set", "train.max_steps=1")
    after_probe = _run(tmp_path / "after", data_dir)
    weights_after_probe = _init_weights(after_probe)
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("clean")))
    clean = _run(tmp_path / "clean", data_dir)
    assert probe["training"]["steps"] == 1
    assert after_probe["init"]["reused"] and not clean["init"]["reused"]
    assert after_probe["init"]["key"] == clean["init"]["key"] == probe["init"]["key"]
    assert after_probe["init"]["plan"] == clean["init"]["plan"]
    assert clean["init"]["plan"]["steps"] == 4  # 16 rows / batch 4, one epoch
    assert after_probe["init"]["training"] == clean["init"]["training"]
    for name, tensor in _init_weights(clean).items():
        assert torch.equal(tensor, weights_after_probe[name]), name
    for stage in ("raw", "init"):
        ours, theirs = (r["metrics"]["dolly"]["before"][stage] for r in (after_probe, clean))
        assert (ours["metrics"], ours["degeneracy"]) == (theirs["metrics"], theirs["degeneracy"])


@pytest.mark.slow
def test_every_seed_starts_from_one_init_and_other_plans_get_their_own(
    tmp_path, monkeypatch, fresh_cache, data_dir
):
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("seeds")))
    one = _run(tmp_path / "s1", data_dir, "--seed", "1")
    two = _run(tmp_path / "s2", data_dir, "--seed", "2")
    longer = _run(tmp_path / "e2", data_dir, "--set", "train.init_sft_epochs=2")
    assert one["init"]["key"] == two["init"]["key"] and two["init"]["reused"]
    assert longer["init"]["key"] != one["init"]["key"] and longer["init"]["plan"]["steps"] == 8
    reference = one["metrics"]["dolly"]["reference"]
    assert reference["teacher"]["key"] == two["metrics"]["dolly"]["reference"]["teacher"]["key"]
    assert set(reference["floors"]) == {
        "empty",
        "constant",
        "echo_instruction",
        "echo_input",
        "echo_instruction_input",
        "unigram_tokens",
        "bigram_tokens",
    }
    after = one["metrics"]["dolly"]["after"]
    assert {"tf_fkl", "tf_rkl", "tf_top1", "tf_tvd", "tf_top1_prompt", "rougeL_teacher"} <= set(
        after["metrics"]
    )
    assert set(after["degeneracy"]) == {"empty", "distinct_1", "distinct_2", "repetition"}
