"""Shared fixtures: an isolated cache, the real data mirror (../shared/data) or a synthetic one, and the
committed records of the first leaderboard."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

# huggingface_hub and datasets read this once, when first imported (test modules import them while being
# collected): set it before that, so hub lookups fail at once instead of retrying for ~20 s.
os.environ["HF_HUB_OFFLINE"] = "1"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """The session's cache: the GGUF teacher is converted into its models/ once, shared by every module's
    own cache (see _module_cache); a developer's real cache is never touched."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPECKD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.delenv("SPECKD_DATA_DIR", raising=False)
    mp.delenv("SPECKD_PLUGINS", raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (SHARED_DATA / "dolly" / "valid.jsonl").is_file():
        pytest.skip(f"real data mirror not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


def _dolly_rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        with_input = i % 2 == 0
        rows.append(
            {
                "instruction": f"Name the number that follows {i}.",
                "input": f"The numbers count up from {i}." if with_input else "",
                "output": f"The number after {i} is {i + 1}.",
            }
        )
    return rows


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror in the dolly layout written by the test itself."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "dolly").mkdir()
    for name, rows in (("dev.jsonl", _dolly_rows(24, 0)), ("valid.jsonl", _dolly_rows(12, 100))):
        (root / "dolly" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def data_dir(synthetic_data: Path) -> Path:
    """The real mirror when present, else the synthetic one: engine tests run either way."""
    return SHARED_DATA if (SHARED_DATA / "dolly" / "dev.jsonl").is_file() else synthetic_data


@pytest.fixture(scope="session")
def fresh_cache(_cache_dir, tmp_path_factory: pytest.TempPathFactory):
    """Make empty caches (no init checkpoints, no cached scores) that share the session's converted models
    (content-addressed by the GGUF file's digest, so sharing them changes no result)."""
    models = Path(os.environ["SPECKD_CACHE_DIR"]) / "models"
    models.mkdir(exist_ok=True)

    def make(name: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        (path / "models").symlink_to(models)
        return path

    return make


@pytest.fixture(scope="module", autouse=True)
def _module_cache(fresh_cache, request: pytest.FixtureRequest):
    """Each test module starts from an empty cache: no test depends on what another module built."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPECKD_CACHE_DIR", str(fresh_cache(request.module.__name__.rpartition(".")[2])))
    yield
    mp.undo()


def backward_step(student, teacher, batches, mcfg, vocab, rows=None, train_cfg=None):
    """One optimiser step's backward pass through the trainer's own `accumulate`: `teacher` is a
    TeacherSource or None (cross-entropy), `batches` one Batch (or None) per micro-batch."""
    from speckd_bench.config.run_config import TrainConfig
    from speckd_bench.distributed import process_context
    from speckd_bench.engine.trainer import accumulate
    from speckd_bench.loss.objective import MicroBatch

    rows = rows or [[] for _ in batches]
    micro = [None if b is None else MicroBatch(b, r) for b, r in zip(batches, rows, strict=True)]
    return accumulate(
        student, teacher, micro, mcfg, train_cfg or TrainConfig(), process_context(), vocab, None
    )


def cli(monkeypatch, capsys, args: list) -> tuple[int, str]:
    """Run the console entry point (main, as the installed command runs it): its exit code and stderr."""
    from speckd_bench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["speckd-bench", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Bad input: exit code 2 and exactly one line on stderr, naming every fragment."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="session")
def first_leaderboard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding only the committed records of the first leaderboard
    (sweeps/reference-16steps.yaml) and the reference answers: what the tests of the rendered tables
    read, unchanged while the reference grid's records land in results/."""
    from speckd_bench.sweep.status import done_run_ids

    results = ROOT / "results"
    run_ids, _ = done_run_ids(ROOT / "sweeps" / "reference-16steps.yaml", results)
    out = tmp_path_factory.mktemp("first-leaderboard")
    for run_id in run_ids:
        skip = shutil.ignore_patterns("checkpoint*", ".lock")
        shutil.copytree(results / "runs" / run_id, out / "runs" / run_id, ignore=skip)
    shutil.copytree(results / "teacher", out / "teacher")
    return out
