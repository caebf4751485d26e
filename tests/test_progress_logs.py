"""Progress when stdout is a file: plain, timestamped start/end lines per stage and a training line every N
steps, without control codes or carriage returns; on a terminal, a live bar or spinner."""

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console

from speckd_bench import progress

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def unstamped(lines: list[str]) -> list[str]:
    """The progress lines (those with a timestamp), without it."""
    return [STAMP.sub("", line) for line in lines if STAMP.match(line)]


def _cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`speckd-bench ARGS` in a subprocess: its stdout is what the caller makes it, never a terminal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "speckd_bench", *args], env=env, **kwargs)


@pytest.mark.slow
def test_cli_to_a_file_prints_plain_progress_lines(tmp_path, data_dir):
    out = tmp_path / "stdout.txt"
    args = ["run", "--preset", "tiny", "--method", "speckd", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(tmp_path / "results"), "--set", "train.max_steps=4", "--logging-steps", "2"]
    with out.open("w") as stdout:
        proc = _cli(args, stdout=stdout, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    text = out.read_text()
    assert "\x1b" not in text and "\r" not in text  # no control codes or redraws in a log file
    assert "\r" not in proc.stderr.decode()  # nor library progress bars on stderr
    lines = unstamped(text.splitlines())
    for stage in ("load models", "init SFT", "train speckd", "eval trained student (seed 10)"):
        assert any(line.startswith(f"{stage}: start") for line in lines), stage
        assert any(line.startswith(f"{stage}: done") for line in lines), stage
    steps = [line for line in lines if line.startswith("train speckd: step ")]
    assert [line.split()[3] for line in steps] == ["2/4", "4/4"]
    pattern = (
        r"train speckd: step \d/4  loss \S+  divergence \S+  tar \S+  tokens_per_s \S+  "
        r"elapsed \d+:\d\d:\d\d  eta \d+:\d\d:\d\d$"
    )
    assert all(re.match(pattern, line) for line in steps), steps
    assert "record: " in text.splitlines()[-1]


@pytest.mark.slow
def test_quiet_prints_the_record_path_and_keeps_only_the_summary(tmp_path, data_dir):
    args = ["run", "--preset", "tiny", "--method", "sft", "--quiet", "--data-dir", str(data_dir)]
    args += ["--results-dir", str(tmp_path), "--set", "train.max_steps=2", "--set", "eval.eval_before=false"]
    proc = _cli(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("record.json") and proc.stdout.count("\n") == 1
    summary = proc.stderr.strip().splitlines()  # the summary only: no stage or step lines before it
    assert summary[0].startswith("dolly rougeL: raw - -> init ") and summary[-1].endswith(proc.stdout.strip())
    assert "step" not in proc.stderr and ": start" not in proc.stderr


def test_a_line_at_least_every_max_silence_seconds(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))  # stdout: not a tty
    monkeypatch.setattr(progress.SETTINGS, "logging_steps", 100)
    with progress.progress_bar("train x", 1000, quiet=False, log_steps=True) as bar:
        bar.start_at(500)  # resumed: not timed
        for _ in range(3):  # 20 s each
            now[0] += 20.0
            bar.advance(loss=1.0)
    out = capsys.readouterr().out.splitlines()
    assert all(STAMP.match(line) for line in out)
    lines = unstamped(out)
    assert lines[0] == "train x: start (1000 steps)"
    # 30 s after the start, then 30 s after that line; 20 s per timed step for 498 steps
    assert lines[1:] == [
        "train x: step 502/1000  loss 1  elapsed 0:00:40  eta 2:46:00",
        "train x: done 503/1000 in 0:01:00",
    ]


def test_quiet_and_terminal_print_no_lines(monkeypatch, capsys):
    with progress.progress_bar("x", 3, quiet=True, log_steps=True) as bar:
        bar.advance(loss=1.0)
    with progress.stage("y", quiet=True):
        pass
    assert capsys.readouterr().out == ""


def test_off_a_terminal_every_line_is_timestamped_and_plain(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, width=240))  # a file: not a terminal
    monkeypatch.setattr(progress.SETTINGS, "logging_steps", 2)
    with progress.stage("load models", quiet=False):
        pass
    with progress.progress_bar("train x", 4, quiet=False, log_steps=True) as bar:
        for _ in range(4):
            bar.advance(loss=0.5)
    progress.log("done: run a")
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 7 and all(STAMP.match(line) for line in lines), lines
    heads = [line.split(":")[0] for line in unstamped(lines)]
    assert heads == ["load models"] * 2 + ["train x"] * 4 + ["done"]  # start, done; start, 2/4, 4/4, done


def test_a_terminal_gets_a_live_bar_and_spinner_without_timestamps(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=True, width=100))
    with (
        progress.stage("load models", quiet=False),
        progress.progress_bar("train x", 3, quiet=False, log_steps=True) as bar,
    ):
        for _ in range(3):
            bar.advance(loss=0.5)
    text = out.getvalue()
    assert "\x1b[" in text and "load models" in text and "train x" in text
    assert ": start" not in text and not re.search(r"\d{4}-\d\d-\d\d", text)


@pytest.mark.parametrize(("tty", "disabled"), [(False, "1"), (True, None)])
def test_library_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch, tty, disabled):
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: tty))
    progress.plain_library_bars()
    assert os.environ.get("TQDM_DISABLE") == os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == disabled


def test_at_80_columns_a_terminal_bar_keeps_its_counter_and_eta_and_leaves_one_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=True, width=80))
    with progress.stage("load models", quiet=False):
        pass
    label = "train speckd on dolly, a label longer than the room it gets"
    with progress.progress_bar(label, 2000, quiet=False, log_steps=True) as bar:
        for _ in range(2000):
            bar.advance(loss=2.3456, divergence=0.1234, tar=0.9, tokens_per_s=12345.0, grad_norm=1.5)
    raw = out.getvalue()
    last = raw.rindex("\r")  # the finished bar's frame: printed last, then no erase or cursor move
    assert raw[last:].count("\n") == 1 and "\x1b[2K" not in raw[last + 3 :] and "\x1b[1A" not in raw[last:]
    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n", "", raw[last:])  # without colours
    assert len(line) <= 80 and line.startswith("✓ train speckd") and "…" in line  # label, stats give way
    assert re.search(r" 2000/2000 \d+:\d\d:\d\d \d+:\d\d:\d\d ", line)  # counter, elapsed, ETA
    assert re.search(r"\x1b\[2K✓ load models \(\d+:\d\d:\d\d\)\n", raw)  # the spinner's line, replaced


def test_library_output_off_a_terminal_keeps_warnings_and_drops_bar_redraws(monkeypatch):
    from tqdm import tqdm

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.plain_stderr():
        for _ in tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...", disable=False):
            pass
        print("a library warning", file=sys.stderr)
    assert err.getvalue() == "a library warning\n"


def test_harness_warnings_go_through_logging_as_plain_lines(monkeypatch, capsys):
    import logging

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("speckd_bench")
    logger.addHandler(handler)
    try:
        progress.warn("warning: something to know")
    finally:
        logger.removeHandler(handler)
    assert [(r.levelname, r.getMessage()) for r in seen] == [("WARNING", "warning: something to know")]
    assert capsys.readouterr().err == "warning: something to know\n"


def test_no_git_message_leaks_outside_a_git_checkout(monkeypatch, tmp_path, capfd):
    from speckd_bench.records import environment

    monkeypatch.setattr(environment, "__file__", str(tmp_path / "environment.py"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert environment.git_commit() is None
    assert capfd.readouterr() == ("", "")


@pytest.mark.slow
def test_the_gguf_conversion_writes_no_bar_off_a_terminal(tmp_path, capfd):
    from speckd_bench.models.loading import _convert, gguf_path

    _convert(gguf_path(), tmp_path / "model")
    out, err = capfd.readouterr()
    assert (tmp_path / "model" / "config.json").is_file()
    assert "\r" not in out + err and "\x1b" not in out + err
