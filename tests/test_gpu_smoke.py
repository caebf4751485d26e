"""`speckd-bench bench gpu-smoke` on tiny shapes (CPU): it trains and decodes through the harness code,
prints the README table rows, needs none of the packages a bare GPU machine lacks, and refuses to run at
full size without CUDA."""

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.subprocess

CHECK = """
import runpy, sys
sys.argv = ["gpu_smoke", "--small"]
scope = runpy.run_module("speckd_bench.benchmarks.gpu_smoke", run_name="__main__")
print("loaded:", [m for m in scope["FORBIDDEN"] if m in sys.modules])
"""


@pytest.mark.slow
def test_small_run_trains_decodes_and_imports_nothing_a_gpu_machine_lacks():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "loaded: []" in out
    for pair in ("qwen2.5-1.5b-to-0.5b", "minillm-gpt2", "llama"):
        assert f"| {pair}" in out and out.count(f"| {pair}") == 2  # speckd and fkl rows
    assert out.count("ms/step") == 6 and "eval decode:" in out and "new tok/s" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_full_size_without_cuda_says_so_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "speckd_bench", "bench", "gpu-smoke"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no CUDA device here" in done.stderr and "--small" in done.stderr
