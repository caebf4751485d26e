"""Stored state is checked, not trusted: checksums of weights, garbled JSON, full or read-only disks, file
modes that follow the umask, one lock per cache entry, and SIGTERM handled like Ctrl-C."""

import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from speckd_bench import caches
from speckd_bench.caches import atomic_write_json, building, checksum_problem, checksums, publish_dir
from speckd_bench.engine.run_state import (
    Checkpoints,
    RunState,
    TrainProgress,
    deferred_interrupt,
    resume_config,
)
from speckd_bench.engine.teacher_cache import TopKTable, _problem, top_k
from speckd_bench.errors import UserError, sigterm_as_interrupt
from speckd_bench.models import loading as models


def garble(path: Path, offset: int = 200) -> None:
    """Overwrite 64 bytes in the middle of a file with random ones: same size, other content."""
    with open(path, "r+b") as fh:
        fh.seek(min(offset, path.stat().st_size - 64))
        fh.write(os.urandom(64))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def saved_checkpoints(root: Path, steps: int, size: int = 8) -> tuple[Checkpoints, Path]:
    model = torch.nn.Linear(size, size)
    opt = torch.optim.AdamW(model.parameters())
    sched, gen = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), torch.Generator().manual_seed(0)
    ckpts, log_path = Checkpoints(root / "ckpt", {"seed": 1}, every=1, keep=3), root / "log.jsonl"
    with open(log_path, "w") as log:
        for step in range(1, steps + 1):
            log.write(f'{{"step": {step}}}\n')
            ckpts.save(TrainProgress(step, log.tell()), model, opt, sched, gen, log)
    return ckpts, log_path


def restore(root: Path, log_path: Path) -> TrainProgress:
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(model.parameters())
    sched, gen = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), torch.Generator().manual_seed(0)
    return Checkpoints(root / "ckpt", {"seed": 1}, every=1, keep=3).restore(model, opt, sched, gen, log_path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: garble(c / "student.safetensors"), "student.safetensors does not match its checksum"),
        (lambda c: truncate(c / "trainer.pt"), "trainer.pt has the wrong size"),
        (lambda c: (c / "student.safetensors").unlink(), "student.safetensors is missing"),
        (lambda c: truncate(c / "state.json"), "state.json is unreadable"),
    ],
    ids=["random-bytes-in-weights", "truncated-optimizer", "missing-weights", "garbled-state"],
)
def test_a_broken_checkpoint_is_refused_with_the_folder_and_the_fix(tmp_path, damage, reason):
    ckpts, log_path = saved_checkpoints(tmp_path, 3)
    latest = ckpts.latest()
    damage(latest)
    with pytest.raises(UserError) as exc:
        restore(tmp_path, log_path)
    msg = str(exc.value)
    assert f"checkpoint {latest} is broken" in msg and reason in msg, msg
    assert "remove that folder to resume from step-000002" in msg and "\n" not in msg
    shutil.rmtree(latest)  # the fix works: the previous checkpoint is the newest
    assert restore(tmp_path, log_path).step == 2


def test_the_only_checkpoint_broken_says_training_restarts_when_removed(tmp_path):
    ckpts, log_path = saved_checkpoints(tmp_path, 1)
    garble(ckpts.latest() / "trainer.pt")
    with pytest.raises(UserError, match="remove that folder to restart training from its first step"):
        restore(tmp_path, log_path)


def test_garbled_run_state_and_config_are_one_line_errors(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "state.json").write_text('{"before": {')
    with pytest.raises(UserError, match=r"state.json is broken \(state.json is unreadable.*start a new run"):
        RunState(run)
    (run / "config.json").write_text("\x00\x01garbage")
    with pytest.raises(UserError, match="config.json is broken .* run r1 cannot be resumed"):
        resume_config(run, {})


def test_checksums_catch_truncation_missing_files_and_random_bytes(tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(1000))
    sums = checksums(tmp_path, ["a.bin"])
    assert checksum_problem(tmp_path, sums) is None
    garble(tmp_path / "a.bin")
    assert "does not match its checksum" in checksum_problem(tmp_path, sums)
    assert checksum_problem(tmp_path, sums, full=False) is None  # sizes only: cheap, misses this
    truncate(tmp_path / "a.bin")
    assert "wrong size" in checksum_problem(tmp_path, sums, full=False)
    assert "no checksums" in checksum_problem(tmp_path, None)


def test_a_garbled_teacher_topk_file_is_detected_and_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(tmp_path))
    rows = top_k(torch.randn(6, 50), 4)
    tensors = {"values": rows.values, "indices": rows.indices.int(), "rest": rows.rest}
    table = TopKTable({**tensors, "offsets": torch.tensor([0, 2, 6])}, ["a", "b"])
    path = tmp_path / "teacher-topk" / "key.safetensors"
    table.save(path, {})
    assert _problem(path) is None
    garble(path, offset=path.stat().st_size - 80)
    assert "checksum" in _problem(path)
    with building(path, _problem) as ready:
        assert not ready and not path.exists()
        table.save(path, {})
    assert "cache entry" in capsys.readouterr().err
    with building(path, _problem) as ready:
        assert ready
    truncate(path)
    assert _problem(path) is not None


@pytest.mark.slow  # converts the GGUF teacher again (about 15 s)
def test_a_converted_model_without_config_is_converted_once_and_repaired(tmp_path, monkeypatch, capsys):
    good = models.smollm2_dir()
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / good.name
    shutil.copytree(good, target, copy_function=os.link)  # hard links: the shared copy is never touched
    (target / "config.json").unlink()
    conversions = []

    def convert(src, dst):
        conversions.append(dst)
        with publish_dir(dst) as tmp:
            shutil.copytree(good, tmp, dirs_exist_ok=True, copy_function=os.link)

    monkeypatch.setattr(models, "_convert", convert)
    assert models.smollm2_dir() == target and (target / "config.json").is_file()
    assert models.smollm2_dir() == target
    assert conversions == [target]
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "cache entry" in line]
    assert f"cache entry {target} is broken (config.json is missing); removed, rebuilding it" in warning


@pytest.mark.slow
def test_converted_weights_overwritten_at_the_same_size_are_converted_again(tmp_path, monkeypatch, capsys):
    good = models.smollm2_dir()
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / good.name
    shutil.copytree(good, target)  # a real copy: its weights are overwritten below
    weights = target / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        fh.write(os.urandom(4096))
    conversions = []

    def convert(src, dst):
        conversions.append(dst)
        with publish_dir(dst) as tmp:
            shutil.copytree(good, tmp, dirs_exist_ok=True, copy_function=os.link)

    monkeypatch.setattr(models, "_convert", convert)
    assert models.smollm2_dir() == target
    assert conversions == [target]
    assert "model.safetensors does not match its checksum" in capsys.readouterr().err


def _hold_and_build(target: str, held, release) -> None:
    with building(Path(target), lambda p: None, collective=False) as ready:
        assert not ready
        held.set()
        release.wait(10)
        atomic_write_json(Path(target), {"built": os.getpid()})


@pytest.mark.subprocess
def test_a_second_process_waits_for_the_entry_being_built_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(tmp_path))
    target = tmp_path / "teacher-eval" / "entry.json"
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    builder = ctx.Process(target=_hold_and_build, args=(str(target), held, release))
    builder.start()
    assert held.wait(30)
    release.set()
    with building(target, lambda p: None, collective=False) as ready:  # waits for the builder
        assert ready and json.loads(target.read_text())["built"] == builder.pid
    builder.join(10)
    assert builder.exitcode == 0


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_and_published_folders_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "record.json", {"a": 1})
        with publish_dir(tmp_path / "entry") as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
            atomic_write_json(tmp / "meta.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o777 & ~mask
    for name in ("weights.bin", "meta.json"):
        assert (tmp_path / "entry" / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_full_disk_during_a_write_keeps_the_old_file_and_says_where(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "r1" / "record.json"
    atomic_write_json(path, {"old": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(caches.os, "fsync", full)
    with pytest.raises(UserError) as exc:
        atomic_write_json(path, {"new": True})
    assert str(exc.value).startswith(f"cannot write to {path.parent} (No space left on device)")
    assert "--results-dir" in str(exc.value)
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]
    entry = tmp_path / "cache" / "entry"
    with pytest.raises(UserError, match="cannot write to .*cache.*No space left"), publish_dir(entry) as tmp:
        (tmp / "w.bin").write_bytes(b"x")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root and a kernel that allows mounting it), unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root and mount rights): {done.stderr.decode().strip()}"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_checkpoint_that_fills_the_disk_leaves_the_previous_one(small_tmpfs):
    with pytest.raises(UserError) as exc:
        saved_checkpoints(small_tmpfs, 3, size=512)  # 1 MB of weights a checkpoint: the second fills it
    assert "No space left on device" in str(exc.value) and str(small_tmpfs / "ckpt") in str(exc.value)
    root = small_tmpfs / "ckpt"
    assert not list(root.glob(".step-*"))  # no temp folder left
    ckpts = Checkpoints(root, {"seed": 1}, every=1, keep=3)
    assert ckpts.latest() is not None
    ckpts.check()  # what is left is complete and passes its checksums


def test_a_full_results_dir_is_refused_before_training(small_tmpfs, data_dir, monkeypatch, capsys):
    from conftest import assert_one_line_error, cli

    with open(small_tmpfs / "filler", "wb") as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    (small_tmpfs / "runs").mkdir(exist_ok=True)
    args = [
        "run",
        "--preset",
        "tiny",
        "--method",
        "fkl",
        "--data-dir",
        data_dir,
        "--results-dir",
        small_tmpfs,
    ]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", small_tmpfs])
    assert_one_line_error(code, err, f"cannot write to {small_tmpfs / 'runs'}", "No space left on device")
    assert list((small_tmpfs / "runs").iterdir()) == []


def test_a_read_only_cache_dir_is_refused_before_training(
    small_tmpfs, tmp_path, data_dir, monkeypatch, capsys
):
    from conftest import assert_one_line_error, cli

    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    monkeypatch.setenv("SPECKD_CACHE_DIR", str(small_tmpfs))
    args = ["run", "--preset", "tiny", "--method", "fkl", "--data-dir", data_dir, "--results-dir", tmp_path]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(
        code, err, f"cannot write to {small_tmpfs}", "Read-only file system", "SPECKD_CACHE_DIR"
    )


def test_sigterm_is_deferred_in_training_and_a_keyboard_interrupt_elsewhere():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_as_interrupt()
        with deferred_interrupt() as flag:
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.requested  # the step finishes; the loop checkpoints and stops
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
