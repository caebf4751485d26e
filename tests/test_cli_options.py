"""The command line as a tool: --version, -h on every command, shell completion, options with a fixed set of
values (listed in --help, anything else one line), --report-to all|none, --decoding."""

import re
import sys
import typing
from importlib import metadata

import accelerate.tracking
import pytest
import shellingham
import torch
from typer.testing import CliRunner

from speckd_bench.api.settings import fields_of
from speckd_bench.benchmarks.device import bench_device
from speckd_bench.cli import options, run
from speckd_bench.cli.app import app, main
from speckd_bench.config.run_config import EvalConfig
from speckd_bench.errors import UserError

runner = CliRunner()


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`speckd-bench ARGS` through the console script's main: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["speckd-bench", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_is_the_installed_package_version(monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "--version")
    assert code == 0 and out == f"speckd-bench {metadata.version('speckd-bench')}\n"


@pytest.mark.parametrize(
    "command", [[], ["run"], ["eval"], ["methods"], ["tasks"], ["sweep", "plan"], ["bench", "kd-step"]]
)
def test_dash_h_is_help_on_every_command(command):
    short, long = runner.invoke(app, [*command, "-h"]), runner.invoke(app, [*command, "--help"])
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout and "Usage: " in short.stdout


def test_gpu_smoke_help_is_its_own_parsers():
    res = runner.invoke(app, ["bench", "gpu-smoke", "-h"])
    assert res.exit_code == 0 and "--pairs" in res.stdout and "Usage: " not in res.stdout


def test_completion_script_and_completion_of_choices(monkeypatch, capsys):
    # typer shows the script for the shell it detects from the parent processes (a bare `sh` under make
    # or a scheduler has none): pin it, so the test does not depend on what launched pytest
    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("bash", "/bin/bash"))
    code, out, _ = cli(monkeypatch, capsys, "--show-completion")
    assert code == 0 and "_SPECKD_BENCH_COMPLETE=complete_bash" in out
    monkeypatch.setenv("_SPECKD_BENCH_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "speckd-bench bench kd-step --device c")
    monkeypatch.setenv("COMP_CWORD", "4")
    code, out, _ = cli(monkeypatch, capsys)
    assert code == 0 and out.split() == ["cpu", "cuda"]


def _complete(monkeypatch, capsys, line: str) -> list[str]:
    """What bash completion offers for the last word of `line`."""
    monkeypatch.setenv("_SPECKD_BENCH_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(len(line.split()) - 1))
    code, out, _ = cli(monkeypatch, capsys)
    assert code == 0
    return out.split()


def test_task_and_method_names_complete(monkeypatch, capsys):
    assert _complete(monkeypatch, capsys, "speckd-bench run --task d") == ["dialogsum", "dolly"]
    assert _complete(monkeypatch, capsys, "speckd-bench run --task wmt") == ["wmt23_de_en", "wmt23_en_de"]
    offered = _complete(monkeypatch, capsys, "speckd-bench run --method s")
    assert sorted(offered) == ["seqkd", "sfkl", "sft", "skd", "speckd", "srkl"]
    assert _complete(monkeypatch, capsys, "speckd-bench tasks export-lmeval out --task gs") == ["gsm8k"]


def test_completed_names_are_the_registered_ones():
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.methods.discovery import discover_methods

    assert sorted(options.complete_methods("")) == sorted(discover_methods())
    assert sorted(options.complete_tasks("")) == sorted(discover_tasks())


@pytest.mark.subprocess
def test_completion_does_not_import_torch(tmp_path):
    import os
    import subprocess

    code = (
        "import sys\n"
        "from speckd_bench.cli.app import main\n"
        "sys.argv = ['speckd-bench']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    env = {**os.environ, "_SPECKD_BENCH_COMPLETE": "complete_bash"}
    env.update(COMP_WORDS="speckd-bench run --method gk", COMP_CWORD="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["gkd", "no", "torch"]


def test_report_to_completes_the_last_name_of_a_list():
    assert options._complete_trackers("tensorboard,ml") == ["tensorboard,mlflow"]
    assert options._complete_trackers("a") == ["all", "aim"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--decoding", "beam"], "'beam' is not one of 'greedy', 'sample'"),
        (["eval", "--decoding", "beam"], "'beam' is not one of 'greedy', 'sample'"),
        (["run", "--launcher", "slurm"], "'slurm' is not one of 'none', 'accelerate'"),
        (["bench", "kd-step", "--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
        (["bench", "teacher-protocol", "--dtype", "fp16"], "'fp16' is not one of 'auto', 'float32'"),
        (["sweep", "plan", "x.yaml", "--format", "xml"], "'xml' is not one of 'rich', 'json'"),
        (["sweep", "run", "x.yaml", "--executor", "k8s"], "'k8s' is not one of 'local', 'submitit'"),
        (["sweep", "run", "x.yaml", "--backend", "pbs"], "'pbs' is not one of 'slurm', 'local'"),
    ],
)
def test_a_value_outside_the_choices_is_one_line(monkeypatch, capsys, args, fragment):
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and fragment in err and "Value error" not in err, err
    assert err.startswith(f"error: {args[-2]} {fragment}") and f"see speckd-bench {args[0]}" in err


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        (["run"], ["greedy|sample", "none|accelerate", "<all|none|NAME,...>"]),
        (["bench", "kd-step"], ["auto|cpu|cuda", "auto|float32|bfloat16"]),
        (["sweep", "run"], ["local|submitit", "slurm|local"]),
    ],
)
def test_help_lists_the_choices(command, choices):
    text = re.sub(r"\s+", " ", runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout)
    assert all(choice in text for choice in choices), text


def test_decoding_choices_are_the_settings():
    meta, _ = fields_of(EvalConfig())["decoding"]
    assert typing.get_args(run.Decoding) == meta["choices"]


def test_run_passes_decoding_and_every_available_tracker(monkeypatch, data_dir):
    from speckd_bench.engine import recipe

    seen = []
    monkeypatch.setattr(recipe, "run_once", lambda cfg, **kw: seen.append((cfg, kw)) or data_dir)
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    args = ["--decoding", "sample", "--report-to", "all"]
    res = runner.invoke(app, ["run", "--preset", "tiny", "--data-dir", str(data_dir), *args])
    assert res.exit_code == 0, res.output
    assert [(cfg.eval.decoding, kw["report_to"]) for cfg, kw in seen] == [("sample", ["tensorboard"])]


def test_report_to_all_none_and_names(monkeypatch):
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard", "mlflow"])
    assert options.resolve_report_to("all") == ["tensorboard", "mlflow"]
    assert options.resolve_report_to("mlflow,all") == ["mlflow", "tensorboard"]
    assert options.resolve_report_to("none") == options.resolve_report_to(None) == []
    assert options.resolve_report_to("tensorboard") == ["tensorboard"]
    with pytest.raises(UserError, match="'tensorbord' is not a tracker"):
        options.resolve_report_to("all,tensorbord")


def test_bench_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_device("auto") == "cpu" and bench_device("cpu") == "cpu"
    with pytest.raises(UserError, match="no CUDA device is visible"):
        bench_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench_device("auto") == bench_device("cuda") == "cuda"
