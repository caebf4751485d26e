"""`speckd-bench bench decode-parity`: a student trained on the synthetic chain until it is peaked, then the
static and dynamic backends' greedy outputs compared row by row."""

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.errors import UserError

runner = CliRunner()

# Mean top next-token probability on held-out sequences: the chain's own is 0.733; `small` measured 0.004
# after 1 step (about 2 / vocabulary: a random init is flat), 0.531 after 20 and 0.673 after the 60 steps
# below. Above 0.6 only a model that has learned most of the chain passes. 60 steps also make the float32
# comparison sensitive: decode positions off by one left 4 of 32 rows different.
PEAKED = 0.6


@pytest.mark.slow
def test_small_trained_student_decodes_identically_in_float32_on_cpu(tmp_path):
    out = tmp_path / "parity.md"
    args = ["bench", "decode-parity", "--size", "small", "--steps", "60", "--device", "cpu"]
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")][1:]
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table)}
    assert list(rows) == ["float32", "bfloat16"]
    identical, first_20, first_difference, *seconds, speedup = rows["float32"]
    # the float32 promise of generate.py, now on a trained model: every row, token for token
    assert identical == first_20 == "32/32" and first_difference == "n/a"
    assert all(float(s) > 0 for s in seconds) and speedup.endswith("x")
    assert re.fullmatch(r"\d+/32", rows["bfloat16"][0])
    max_prob = float(re.search(r"mean max-prob: ([0-9.]+)", text).group(1))
    assert max_prob > PEAKED, text
    assert "machine: CPU" in text and "60 steps" in text


# A bare GPU machine has torch and transformers, not the data and scoring packages (gpu_smoke.FORBIDDEN).
BARE = """
import runpy, sys
from speckd_bench.benchmarks.gpu_smoke import FORBIDDEN
sys.argv = ["decode_parity", "--size", "small", "--steps", "1", "--device", "cpu"]
runpy.run_module("speckd_bench.benchmarks.decode_parity", run_name="__main__")
print("loaded:", [m for m in FORBIDDEN if m in sys.modules])
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_module_runs_and_imports_nothing_a_gpu_machine_lacks():
    done = subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout and "| float32 |" in done.stdout


def test_decode_parity_rejects_an_unknown_size():
    res = runner.invoke(app, ["bench", "decode-parity", "--size", "huge"])
    assert isinstance(res.exception, UserError)
    assert str(res.exception) == "--size 'huge': use one of small, smollm2-student, qwen-0.5b"
