"""`run`, `eval` and `export`: train and record runs, evaluate a run or a model, export a student."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from speckd_bench.cli.options import (
    MirrorOpt,
    PluginsOpt,
    ReportToOpt,
    complete_methods,
    complete_tasks,
    discover,
    resolve_report_to,
)
from speckd_bench.config.run_config import load_yaml_config, parse_sets
from speckd_bench.errors import UserError
from speckd_bench.progress import SETTINGS, say

EvalSuiteOpt = Annotated[
    str | None, typer.Option("--eval-suite", help="Also score every eval set of this suite (e.g. minillm).")
]
LmEvalOpt = Annotated[
    str | None,
    typer.Option(
        "--lm-eval",
        help="lm-eval tasks to run on the model, comma-separated: lm-eval names, speckd_<task> (our tasks), "
        "@task (those the task file lists).",
    ),
]
LmEvalIncludeOpt = Annotated[
    list[Path] | None, typer.Option("--lm-eval-include", help="Directory of lm-eval task YAMLs (repeatable).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars or messages.")]
Decoding = Literal["greedy", "sample"]
DecodingOpt = Annotated[
    Decoding | None,
    typer.Option(help="Evaluation decoding (eval.decoding; sampling: eval.temperature, top_p, top_k)."),
]


def _given(flags: dict[str, object]) -> dict[str, object]:
    """The options that were given (not None)."""
    return {k: v for k, v in flags.items() if v is not None}


def _eval_flags(
    eval_suite: str | None, lm_eval: str | None, lm_eval_include: list[Path] | None, decoding: str | None
) -> dict[str, object]:
    """Config overrides of the evaluation flags shared by `run` and `eval`."""
    flags: dict[str, object] = {"eval.suite": eval_suite, "eval.decoding": decoding}
    if lm_eval:
        flags["lm_eval.tasks"] = [name.strip() for name in lm_eval.split(",") if name.strip()]
    if lm_eval_include:
        flags["lm_eval.include"] = [str(p) for p in lm_eval_include]
    return _given(flags)


def run(
    task: Annotated[
        str | None, typer.Option(help="Task name (see `speckd-bench tasks`).", autocompletion=complete_tasks)
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="Method name (see `speckd-bench methods`).", autocompletion=complete_methods),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="default | reference | tiny (CPU); qwen2.5-1.5b-to-0.5b | minillm-gpt2 | llama (GPU)"
        ),
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher: built-in name, hub id or local dir.")] = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="Student: layers:N (evenly spaced), block:N (first N-1 + last), hub id or local dir."
        ),
    ] = None,
    seed: Annotated[
        list[int] | None, typer.Option(help="Training seed; repeat for one run per seed.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Local mirror of the task files (else $SPECKD_DATA_DIR).")
    ] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where run records go (default: results).")] = None,
    max_train_examples: Annotated[int | None, typer.Option(help="Training rows.")] = None,
    max_eval_examples: Annotated[int | None, typer.Option(help="Evaluation rows.")] = None,
    eval_suite: EvalSuiteOpt = None,
    lm_eval: LmEvalOpt = None,
    lm_eval_include: LmEvalIncludeOpt = None,
    decoding: DecodingOpt = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. method.k=5 (repeatable).")
    ] = None,
    plugins: PluginsOpt = None,
    quiet: QuietOpt = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue an unfinished run (killed or Ctrl-C) from its last checkpoint: its run id "
            "under --results-dir/runs, or 'last'.",
        ),
    ] = None,
    launcher: Annotated[
        Literal["none", "accelerate"],
        typer.Option(
            help="accelerate: re-run this command under `accelerate launch` (data parallel on this machine: "
            "one process per GPU, gloo on CPUs)."
        ),
    ] = "none",
    num_processes: Annotated[
        int | None, typer.Option(help="Processes for --launcher accelerate (default: 1).")
    ] = None,
    skip_done: Annotated[
        bool,
        typer.Option(
            "--skip-done",
            help="Skip a seed whose complete record with the same resolved config is already under "
            "--results-dir (a grid stopped half way continues where it stopped).",
        ),
    ] = False,
    report_to: ReportToOpt = None,
    logging_steps: Annotated[
        int,
        typer.Option(
            "--logging-steps",
            min=1,
            help="When stdout is not a terminal: a training progress line every N steps (and every 30 s).",
        ),
    ] = 10,
) -> None:
    """Train + evaluate + record one run per seed."""
    if launcher != "none" or num_processes is not None:
        _relaunch(launcher, num_processes)
        return
    if quiet:  # tqdm reads this when it is first imported (the one-time GGUF conversion bar)
        os.environ["TQDM_DISABLE"] = "1"
    from speckd_bench.engine.recipe import build_run_config, run_once
    from speckd_bench.records.store import find_complete

    trackers = resolve_report_to(report_to)
    SETTINGS.logging_steps = logging_steps
    discover(plugins)
    overrides: dict[str, object] = dict(parse_sets(set_ or []))
    flags = {
        "task": task,
        "model.teacher": teacher,
        "model.student": student,
        "data.data_dir": str(data_dir) if data_dir else None,
        "results_dir": str(results_dir) if results_dir else None,
        "data.max_train_examples": max_train_examples,
        "data.max_eval_examples": max_eval_examples,
    }
    overrides.update(_given(flags))
    overrides.update(_eval_flags(eval_suite, lm_eval, lm_eval_include, decoding))
    if resume is not None:
        _resume(resume, overrides, method, preset, config, seed, quiet, trackers)
        return
    configs = [  # every seed's config is checked before the first run starts
        build_run_config(method=method, preset=preset, config_file=config, overrides=per_seed)
        for per_seed in (overrides if s is None else {**overrides, "seed": s} for s in seed or [None])
    ]
    for cfg in configs:
        done = find_complete(Path(cfg.results_dir), cfg) if skip_done else None
        if done is not None:
            say(f"seed {cfg.seed}: already complete, skipped ({done})")
            continue
        _print_record(run_once(cfg, quiet=quiet, report_to=trackers), quiet)


def _print_record(path: Path, quiet: bool) -> None:
    """With --quiet, the record's path is the one line a run prints (on the main process)."""
    from speckd_bench.distributed import process_context

    if quiet and process_context().is_main:
        print(path)


def _relaunch(launcher: str, num_processes: int | None) -> None:
    """`run --launcher accelerate --num-processes N`: this same command, N processes, through accelerate."""
    from speckd_bench.distributed import relaunch, strip_launch_options

    if launcher == "none":
        raise UserError("--num-processes needs --launcher accelerate (or start with: accelerate launch)")
    processes = 1 if num_processes is None else num_processes
    code = relaunch(launcher, processes, strip_launch_options(sys.argv[1:]))
    if code:
        raise typer.Exit(code)


def _resume(
    which: str,
    overrides: dict[str, object],
    method: str | None,
    preset: str | None,
    config: Path | None,
    seed: list[int] | None,
    quiet: bool,
    report_to: list[str],
) -> None:
    """`run --resume`: the run's own config; other options may only repeat it (or change paths)."""
    from speckd_bench.engine.recipe import run_once
    from speckd_bench.engine.run_state import find_run, resume_config

    if seed and len(seed) > 1:
        raise UserError("--resume continues one run: pass at most one --seed (the run's own)")
    given = {**(load_yaml_config(config) if config else {}), **overrides}
    given.update(_given({"method.name": method, "preset": preset, "seed": seed[0] if seed else None}))
    results_dir = Path(str(overrides.get("results_dir", "results")))
    run_dir = find_run(results_dir, which)
    _print_record(
        run_once(resume_config(run_dir, given), quiet=quiet, resume=run_dir, report_to=report_to), quiet
    )


def eval_(
    run: Annotated[str | None, typer.Option("--run", help="Run id (or run directory) to evaluate.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Or a model: built-in name, hub id or local dir.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Eval set (default: the run's task).")] = None,
    eval_suite: EvalSuiteOpt = None,
    lm_eval: LmEvalOpt = None,
    lm_eval_include: LmEvalIncludeOpt = None,
    decoding: DecodingOpt = None,
    data_dir: MirrorOpt = None,
    results_dir: Annotated[Path, typer.Option(help="Where runs/ and evals/ live.")] = Path("results"),
    max_eval_examples: Annotated[int | None, typer.Option(help="Rows per eval set.")] = None,
    preset: Annotated[str | None, typer.Option(help="With --model: default | reference | tiny")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="With --model: YAML run config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. eval.max_new_tokens=128 (repeatable).")
    ] = None,
    plugins: PluginsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a recorded run's checkpoint (or a model) without training; writes an eval record."""
    from speckd_bench.engine.eval_run import eval_run, evaluate_model
    from speckd_bench.engine.recipe import build_run_config

    if (run is None) == (model is None):
        raise UserError("eval needs exactly one of --run RUN_ID and --model NAME")
    discover(plugins)
    overrides: dict[str, object] = dict(parse_sets(set_ or []))
    flags = {
        "task": task,
        "data.data_dir": str(data_dir) if data_dir else None,
        "data.max_eval_examples": max_eval_examples,
    }
    overrides.update(_given(flags))
    overrides.update(_eval_flags(eval_suite, lm_eval, lm_eval_include, decoding))
    if run is not None:
        if preset or config:
            raise UserError("--preset and --config apply to --model; a run's evaluation uses its own config")
        path = eval_run(run, results_dir, overrides, quiet)
    else:
        overrides["results_dir"] = str(results_dir)
        cfg = build_run_config(preset=preset, config_file=config, overrides=overrides)
        path = evaluate_model(cfg, str(model), results_dir / "evals", None, quiet)
    if quiet:
        print(path)


def export(
    run: Annotated[str, typer.Argument(help="Run id under --results-dir/runs, or a run directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the Hugging Face model.")],
    results_dir: Annotated[Path, typer.Option(help="Where runs/ lives.")] = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty OUT_DIR.")] = False,
    push_to_hub: Annotated[
        str | None, typer.Option("--push-to-hub", help="Also upload the folder to this hub repo (user/name).")
    ] = None,
) -> None:
    """Write a run's final student as a Hugging Face model folder with a model card (README.md)."""
    from transformers.utils import logging as transformers_logging

    from speckd_bench.publish.hub_export import export_run
    from speckd_bench.publish.hub_export import push_to_hub as push

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    path = export_run(run, results_dir, out_dir, force=force, name=push_to_hub)
    say(str(path))
    if push_to_hub:
        say(push(path, push_to_hub))
