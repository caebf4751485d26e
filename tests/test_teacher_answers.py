"""The teacher's reference answers: kept beside a leaderboard, and a rebuild compared with them."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speckd_bench.caches import atomic_write_json
from speckd_bench.cli.app import app
from speckd_bench.evaluation.teacher_answers import (
    answer_rows,
    answers_path,
    differing,
    entry_path,
    write_answers,
)
from speckd_bench.jsonl import read_jsonl

OUTPUTS = {"20": ["b0", "b1"], "10": ["a0", "a1"]}


def test_answers_are_copied_from_the_cache_and_compared(tmp_path):
    atomic_write_json(entry_path("dolly", "k1"), {"key": "k1", "summary": {}, "outputs": OUTPUTS})
    written = write_answers(tmp_path, {("dolly", "k1"), ("dolly", "not-cached-here")})
    path = answers_path(tmp_path, "dolly", "k1")
    assert written == [path] and path == tmp_path / "teacher" / "dolly-k1.jsonl"
    assert read_jsonl(path) == [
        {"eval_seed": 10, "index": 0, "output": "a0"},
        {"eval_seed": 10, "index": 1, "output": "a1"},
        {"eval_seed": 20, "index": 0, "output": "b0"},
        {"eval_seed": 20, "index": 1, "output": "b1"},
    ]
    assert write_answers(tmp_path, {("dolly", "k1")}) == []  # unchanged: not rewritten
    assert differing(path, OUTPUTS) == (0, 4)
    assert differing(path, {"10": ["a0", "other"], "20": ["b0", "b1"]}) == (1, 4)
    assert differing(tmp_path / "none.jsonl", OUTPUTS) is None
    assert answer_rows({"10": []}) == []


@pytest.mark.slow
def test_a_rebuild_that_decodes_other_answers_says_so(tmp_path, data_dir, fresh_cache, monkeypatch):
    results = tmp_path / "results"
    args = ["run", "--preset", "tiny", "--method", "sft", "--quiet", "--set", "train.max_steps=1"]
    args += ["--max-eval-examples", "3", "--data-dir", str(data_dir), "--results-dir", str(results)]
    runner = CliRunner()
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("first")))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((Path(res.stdout.strip())).read_text())
    key = record["metrics"]["dolly"]["reference"]["teacher"]["key"]
    [path] = write_answers(results, {("dolly", key)})
    rows = read_jsonl(path)
    rows[1]["output"] += " (decoded elsewhere)"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(fresh_cache("second")))  # the teacher is decoded again
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"1 of 3 teacher answers on dolly differ from the committed ones in {path}" in res.stderr
