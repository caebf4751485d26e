"""Paths that cannot be written give one line naming the path and the fix, in every command: a full or
read-only disk met anywhere, and a cache folder that is a file."""

import errno
import os

import pytest
from conftest import assert_one_line_error, cli

import speckd_bench.publish.hub_export as hub_export


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_disk_error_in_any_command_is_one_line_exit_2(tmp_path, monkeypatch, capsys, code):
    """What `export` (or `run --resume`) meets on a read-only results folder or a full disk: a lock or state
    file that cannot be written there."""
    target = tmp_path / "results" / "runs" / "r1" / "run.lock"

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(hub_export, "export_run", refuse)
    args = ["export", "r1", str(tmp_path / "out"), "--results-dir", str(tmp_path / "results")]
    code_, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code_, err, f"cannot write to {target.parent}", os.strerror(code))


def test_an_unrelated_os_error_is_not_disguised(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError(errno.EBADF, "bad file descriptor")

    monkeypatch.setattr(hub_export, "export_run", broken)
    with pytest.raises(OSError, match="bad file descriptor"):
        cli(monkeypatch, capsys, ["export", "r1", str(tmp_path / "out"), "--results-dir", str(tmp_path)])


@pytest.mark.parametrize("inside", [False, True])
def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, data_dir, inside):
    (tmp_path / "cachefile").write_text("not a folder")
    monkeypatch.setenv(
        "SPECKD_CACHE_DIR", str(tmp_path / "cachefile" / "sub" if inside else tmp_path / "cachefile")
    )
    args = ["run", "--preset", "tiny", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "out")]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, "cachefile", "set SPECKD_CACHE_DIR to a folder")


def test_a_full_disk_while_a_checkpoint_is_saved_is_one_line_and_keeps_the_previous(
    tmp_path, monkeypatch, capsys, data_dir
):
    import torch

    import speckd_bench.engine.run_state as run_state
    from speckd_bench.models.loading import smollm2_dir

    smollm2_dir()  # converted beforehand: the one-time conversion bar is not part of the error output
    capsys.readouterr()
    saves = []
    real_save = torch.save

    def fill_up(obj, fh, *args, **kwargs):
        saves.append(fh.name)
        if len(saves) > 1:  # the first checkpoint is written, the second meets a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), fh.name)
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(run_state.torch, "save", fill_up)
    out = tmp_path / "out"
    args = ["run", "--preset", "tiny", "--data-dir", str(data_dir), "--results-dir", str(out)]
    code, err = cli(monkeypatch, capsys, [*args, "--set", "train.checkpoint_every=1", "--quiet"])
    assert_one_line_error(code, err, "No space left on device")
    (run,) = (out / "runs").iterdir()
    (kept,) = (run / "checkpoints").glob("step-*")
    assert (kept / "trainer.pt").is_file() and not list((run / "checkpoints").glob(".*"))
