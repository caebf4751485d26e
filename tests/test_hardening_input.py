"""Hostile input: usage errors, unreadable files, YAML alias bombs, rows that are not text, absurd values.
Every probe is one line on stderr, exit code 2, and no run folder."""

import json
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli

TINY = ["run", "--preset", "tiny", "--quiet"]
GOOD_ROW = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}) + "\n"
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def mirror(root: Path, train: bytes) -> Path:
    """A dolly mirror whose training file is `train` (raw bytes) and whose eval file is one good row."""
    (root / "dolly").mkdir(parents=True)
    (root / "dolly" / "dev.jsonl").write_bytes(train)
    (root / "dolly" / "valid.jsonl").write_text(GOOD_ROW)
    return root


def bad_rows(line: bytes, *fragments: str):
    """A case: a good row, then `line` as line 2 of the training file."""
    return lambda tmp: (
        [*TINY, "--data-dir", mirror(tmp / "m", GOOD_ROW.encode() + line + b"\n")],
        ("dev.jsonl:2: ", *fragments),
    )


def config_file(content: bytes | str, *fragments: str):
    """A case: `run --config FILE` with this content."""

    def case(tmp: Path) -> tuple[list, tuple]:
        path = tmp / "run.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [*TINY, "--config", path], ("run.yaml", *fragments)

    return case


def usage(args: list, *fragments: str):
    return lambda tmp: (args, fragments)


def row(**fields: object) -> bytes:
    return json.dumps({"instruction": "a", "input": "", "output": "b", **fields}).encode()


CASES = {
    "unknown option": usage(
        ["run", "--foo"], "no such option: --foo", "`speckd-bench run`", "see speckd-bench run --help"
    ),
    "misspelt option": usage(["run", "--sed", "3"], "no such option: --sed", "--seed"),
    "missing argument": usage(
        ["tasks", "validate"], "missing argument", "see speckd-bench tasks validate --help"
    ),
    "option after its subcommand": usage(
        ["tasks", "validate", "x.yaml", "--plugins", "d"],
        "--plugins belongs to `speckd-bench tasks`: put it before `validate`",
    ),
    "unknown command": usage(["nosuch"], "no such command 'nosuch'", "see speckd-bench --help"),
    "not an integer": usage([*TINY, "--seed", "abc"], "invalid value for '--seed'"),
    "seed past 64 bits": usage([*TINY, "--seed", "18446744073709551615"], "seed=18446744073709551615"),
    "non-UTF-8 row": bad_rows(b'{"instruction": "\xff", "input": "", "output": "x"}', "not UTF-8"),
    "lone surrogate": bad_rows(row(instruction="a\\ud800").replace(b"\\\\", b"\\"), "lone surrogate"),
    "JSON nested 100k deep": bad_rows(b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "null reference": bad_rows(row(output=None), "field 'output' is null", "string or a list of strings"),
    "numeric reference": bad_rows(row(output=[1, "x"]), "field 'output' is 1"),
    "binary config": config_file(bytes(range(256)), "not UTF-8"),
    "config with a NUL byte": config_file(b"train:\x00\n", "binary file"),
    "self-referencing alias": config_file("a: &a [*a]\n", "aliases (*name) are not supported"),
    "alias bomb": config_file(BOMB, "aliases (*name) are not supported"),
    "deeply nested config": config_file("[" * 100_000 + "]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_probe_is_one_line_exit_2_and_writes_no_run(case, tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.chdir(tmp_path)
    args, fragments = case(tmp_path)
    if args[0] == "run":
        args = [*args, "--results-dir", tmp_path / "results"]
        if "--data-dir" not in args:
            args += ["--data-dir", data_dir]
    t0 = time.perf_counter()
    code, err = cli(monkeypatch, capsys, args)
    assert time.perf_counter() - t0 < 30
    assert_one_line_error(code, err, *fragments)
    assert not list((tmp_path / "results" / "runs").glob("*"))


def test_alias_bomb_in_a_task_or_sweep_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bomb.yaml").write_text(BOMB)
    (tmp_path / "sweep.yaml").write_text(BOMB)
    for args in (["tasks", "--plugins", tmp_path / "plugins"], ["sweep", "status", tmp_path / "sweep.yaml"]):
        code, err = cli(monkeypatch, capsys, args)
        assert_one_line_error(code, err, "bomb.yaml:2" if args[0] == "tasks" else "sweep.yaml:2", "aliases")


BOUNDS = {
    "max_new_tokens": (["--set", "eval.max_new_tokens=1000000"], "max_new_tokens in [1, 32768]"),
    "max_length": (["--set", "data.max_length=1000000"], "max_length <= 32768"),
}


@pytest.mark.parametrize(("extra", "fragment"), BOUNDS.values(), ids=BOUNDS.keys())
def test_values_past_their_bound_fail_before_a_run_folder(
    extra, fragment, tmp_path, monkeypatch, capsys, data_dir
):
    args = [*TINY, *extra, "--data-dir", data_dir, "--results-dir", tmp_path / "results"]
    code, err = cli(monkeypatch, capsys, args)
    assert_one_line_error(code, err, fragment)
    assert not list((tmp_path / "results" / "runs").glob("*"))


@pytest.mark.slow
def test_k_beyond_the_vocabulary_fails_once_the_models_are_loaded(tmp_path, monkeypatch, capsys, data_dir):
    args = [*TINY, "--method", "speckd", "--set", "method.k=100000", "--data-dir", data_dir]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", tmp_path / "results"])
    last = err.splitlines()[-1] + "\n"  # a first run in a fresh cache shows the teacher's conversion bar
    assert_one_line_error(code, last, "method.k=100000 exceeds the vocabulary of 49152 tokens", "N <= 49152")
    assert not list((tmp_path / "results" / "runs").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting", ["data.max_length=600", "eval.max_new_tokens=500"], ids=["training", "decoding"]
)
def test_lengths_beyond_the_models_context_fail_once_the_models_are_loaded(
    setting, tmp_path, monkeypatch, capsys, data_dir
):
    args = [*TINY, "--method", "fkl", "--set", setting, "--data-dir", data_dir]
    code, err = cli(monkeypatch, capsys, [*args, "--results-dir", tmp_path / "results"])
    last = err.splitlines()[-1] + "\n"  # a first run in a fresh cache shows the teacher's conversion bar
    assert_one_line_error(code, last, "the models take at most 512 positions", "lower them to fit 512")
    assert not list((tmp_path / "results" / "runs").glob("*"))


@pytest.mark.parametrize("name", ["my task", "dolly\n", "Dolly", "a.b"])
def test_task_names_are_plain_identifiers(tmp_path, name):
    from speckd_bench.data.tasks import parse_task
    from speckd_bench.errors import UserError

    tree = {
        "name": name,
        "kind": "instruction",
        "description": "d",
        "splits": {"eval": {"mirror": "x.jsonl"}},
    }
    tree |= {"prompt": {"template": "{instruction}"}, "reference": "output"}
    with pytest.raises(UserError, match="use a-z, 0-9, _ and -"):
        parse_task(tree, tmp_path / "t.yaml")


def test_tasks_validate_prints_nothing_before_a_bad_row(tmp_path, monkeypatch, capsys):
    root = mirror(tmp_path / "m", GOOD_ROW.encode() + row(output=None) + b"\n")
    task = (Path(__file__).resolve().parents[1] / "tasks" / "dolly.yaml").read_text()
    (tmp_path / "dolly.yaml").write_text(task)
    code, err = cli(monkeypatch, capsys, ["tasks", "validate", tmp_path / "dolly.yaml", "--data-dir", root])
    assert_one_line_error(code, err, "dev.jsonl:2: field 'output' is null")
    assert capsys.readouterr().out == ""
