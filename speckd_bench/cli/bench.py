"""`bench`: the benchmarks, each printed as a markdown table with the machine."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal

import typer

from speckd_bench.cli.options import MirrorOpt
from speckd_bench.errors import UserError
from speckd_bench.progress import say

bench_app = typer.Typer(
    help="Benchmarks: every variant measured in one process, printed as a markdown table with the machine.",
    no_args_is_help=True,
)

BenchDeviceOpt = Annotated[
    Literal["auto", "cpu", "cuda"], typer.Option(help="Device: auto is cuda when one is visible.")
]
Dtype = Literal["auto", "float32", "bfloat16"]
BenchOutOpt = Annotated[Path | None, typer.Option("--out", help="Also write the table to this file.")]


def _bench_output(text: str, path: Path | None) -> None:
    say(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _check_size(size: str, sizes: Collection[str]) -> None:
    """The sizes live in the benchmark modules (they import torch): checked once the command runs."""
    if size not in sizes:
        raise UserError(f"--size {size!r}: use one of {', '.join(sizes)}")


@bench_app.command("kd-step")
def bench_kd_step(
    size: Annotated[
        str, typer.Option(help="small (CPU, seconds), smollm2 (the default pair), qwen (GPU).")
    ] = "small",
    device: BenchDeviceOpt = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Parameter dtype: auto (bf16 on CUDA, fp32 on CPU).")] = "auto",
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per variant (the median is shown).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps per variant first.")] = 2,
    chunk_rows: Annotated[int, typer.Option(min=0, help="Target rows per fused chunk (0: automatic).")] = 0,
    out_file: BenchOutOpt = None,
) -> None:
    """One KD optimiser step: naive full logits vs the plain and fused paths (and Liger if installed)."""
    from speckd_bench.benchmarks import kd_step
    from speckd_bench.benchmarks.device import bench_device

    _check_size(size, kd_step.SIZES)
    rows, facts = kd_step.main(size, bench_device(device), dtype, steps, warmup, chunk_rows)
    _bench_output(kd_step.format_table(rows, facts, size), out_file)


@bench_app.command(
    "gpu-smoke",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # -h and --help reach the benchmark's own parser, which lists its options
)
def bench_gpu_smoke(ctx: typer.Context) -> None:
    """Random-init models of the GPU presets' shapes: speckd and fkl steps through the Trainer and one
    decoding pass, with ms/step, tokens/s and peak memory (the README's 'Several GPUs' table). Options:
    --small (tiny shapes on the CPU), --steps, --batch, --pairs ... (`speckd-bench bench gpu-smoke -h`)."""
    from speckd_bench.benchmarks import gpu_smoke

    gpu_smoke.main(ctx.args)


@bench_app.command("generate")
def bench_generate(
    size: Annotated[
        str, typer.Option(help="small (CPU, seconds) or qwen (Qwen2.5-0.5B shapes, GPU).")
    ] = "small",
    device: BenchDeviceOpt = "auto",
    out_file: BenchOutOpt = None,
) -> None:
    """Greedy evaluation decoding: transformers generate (dynamic, static) vs ours, same inputs."""
    from speckd_bench.benchmarks import generate
    from speckd_bench.benchmarks.device import bench_device

    _bench_output(generate.format_table(generate.main(bench_device(device), size)), out_file)


@bench_app.command("decode-parity")
def bench_decode_parity(
    size: Annotated[
        str,
        typer.Option(
            help="small (CPU, seconds); GPU: smollm2-student (the default student's shapes) or qwen-0.5b."
        ),
    ] = "small",
    steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default: the size's; 300 for the GPU sizes).")
    ] = None,
    device: BenchDeviceOpt = "auto",
    out_file: BenchOutOpt = None,
) -> None:
    """Train a student on a synthetic task, then compare static and dynamic greedy outputs (fp32, bf16)."""
    from speckd_bench.benchmarks import decode_parity
    from speckd_bench.benchmarks.device import bench_device

    _check_size(size, decode_parity.SIZES)
    rows, facts = decode_parity.main(size, bench_device(device), steps)
    _bench_output(decode_parity.format_table(rows, facts, size), out_file)


@bench_app.command("default-run")
def bench_default_run(
    task: Annotated[str, typer.Option(help="Task of the runs.")] = "dolly",
    method: Annotated[
        str, typer.Option(help="An off-policy method (the cache does not apply to others).")
    ] = ("speckd"),
    max_train_examples: Annotated[
        int | None, typer.Option(help="Training rows (default: the preset's).")
    ] = None,
    teacher_cache: Annotated[
        bool, typer.Option("--teacher-cache", help="Also time two warm runs with the teacher top-k cache.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override of every run, e.g. model.teacher_dtype=float32 (repeatable)."),
    ] = None,
    out_file: BenchOutOpt = None,
) -> None:
    """The default run from cold caches, then warm (and with the teacher cache): wall and stage seconds."""
    from speckd_bench.benchmarks import default_run
    from speckd_bench.config.run_config import parse_sets

    overrides: dict[str, object] = dict(parse_sets(set_ or []))
    if max_train_examples is not None:
        overrides["data.max_train_examples"] = max_train_examples
    rows, facts = default_run.main(task, method, overrides, teacher_cache)
    _bench_output(default_run.format_table(rows, facts), out_file)


@bench_app.command("teacher-protocol")
def bench_teacher_protocol(
    task: Annotated[
        list[str] | None, typer.Option(help="Tasks to study (repeatable; default dolly).")
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Eval rows per task.")] = 200,
    new_tokens: Annotated[
        list[int] | None, typer.Option(help="Answer lengths (repeatable; default 64 128 256).")
    ] = None,
    dtype: Annotated[Dtype, typer.Option(help="Teacher dtype.")] = "auto",
    data_dir: MirrorOpt = None,
    out_file: BenchOutOpt = None,
) -> None:
    """The teacher against the trivial floors per prompt format and answer length."""
    from speckd_bench.benchmarks import teacher_protocol

    lengths = sorted(new_tokens or [64, 128, 256])
    text = teacher_protocol.main(task or ["dolly"], rows, lengths, dtype, str(data_dir) if data_dir else None)
    _bench_output(text, out_file)


@bench_app.command("reference-parity")
def bench_reference_parity(
    preset: Annotated[
        str, typer.Option(help="The protocol whose teacher answers are compared.")
    ] = "reference",
    task: Annotated[str, typer.Option(help="Eval set.")] = "dolly",
    rows: Annotated[int, typer.Option(min=1, help="Eval rows.")] = 100,
    work: Annotated[Path | None, typer.Option(help="Keep each decode here and reuse it.")] = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(
            help="Teacher dtypes compared: float32, bfloat16, float32-from-bfloat16 (eval.reference_dtype="
            "float32 with a bfloat16 teacher); default: all."
        ),
    ] = None,
    data_dir: MirrorOpt = None,
    out_file: BenchOutOpt = None,
) -> None:
    """The teacher's greedy answers on the CPU's native kernels against the AVX2 ones, per dtype."""
    import os

    from speckd_bench.benchmarks import reference_parity

    if data_dir is not None:
        os.environ["SPECKD_DATA_DIR"] = str(data_dir)  # read by the child processes
    dtypes = tuple(dtype or reference_parity.DTYPES)
    for name in dtypes:
        if name not in reference_parity.DTYPES:
            raise UserError(f"--dtype {name!r}: use one of {', '.join(reference_parity.DTYPES)}")
    _bench_output(reference_parity.report(preset, task, rows, work, dtypes), out_file)
