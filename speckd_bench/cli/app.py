"""Command line: thin wrappers that parse, build a RunConfig and call the engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from speckd_bench.cli.sweep import sweep_app, sweep_run_ids
from speckd_bench.errors import RunInterrupted, UserError, sigterm_as_interrupt

app = typer.Typer(
    help="speckd-bench: train a student by knowledge distillation (SpecKD or a baseline), evaluate it, "
    "and tabulate runs into a leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _stdout_console() -> Console:
    """Rich output on stdout: lines stay whole (soft wrap); tables take a terminal's width, else $COLUMNS,
    else 240 columns, so output piped to a file or a log is not folded at rich's default of 80."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(soft_wrap=True, width=240)


out = _stdout_console()


def say(text: str) -> None:
    """One plain line on stdout (no markup, no wrapping)."""
    out.print(text, markup=False, soft_wrap=True, highlight=False)


def warn(text: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    print(text, file=sys.stderr)


PluginsOpt = Annotated[
    list[Path] | None,
    typer.Option("--plugins", help="Directory of task YAML / method .py plugins (repeatable)."),
]


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


def _discover(plugins: list[Path] | None) -> None:
    from speckd_bench.data.tasks import discover_tasks
    from speckd_bench.methods.discovery import discover_methods

    discover_tasks(plugins)
    discover_methods(plugins)


def _eval_flags(
    eval_suite: str | None, lm_eval: str | None, lm_eval_include: list[Path] | None
) -> dict[str, object]:
    """Config overrides of the evaluation flags shared by `run` and `eval`."""
    flags: dict[str, object] = {"eval.suite": eval_suite}
    if lm_eval:
        flags["lm_eval.tasks"] = [name.strip() for name in lm_eval.split(",") if name.strip()]
    if lm_eval_include:
        flags["lm_eval.include"] = [str(p) for p in lm_eval_include]
    return {k: v for k, v in flags.items() if v is not None}


@app.command()
def run(
    task: Annotated[str | None, typer.Option(help="Task name (see `speckd-bench tasks`).")] = None,
    method: Annotated[str | None, typer.Option(help="Method name (see `speckd-bench methods`).")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="default | reference | tiny (CPU); qwen2.5-1.5b-to-0.5b | minillm-gpt2 | llama (GPU)"
        ),
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher: built-in name, hub id or local dir.")] = None,
    student: Annotated[str | None, typer.Option(help="Student: layers:N, hub id or local dir.")] = None,
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
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. method.k=5 (repeatable).")
    ] = None,
    plugins: PluginsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars or messages.")] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue an unfinished run (killed or Ctrl-C) from its last checkpoint: its run id "
            "under --results-dir/runs, or 'last'.",
        ),
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            help="none | accelerate: re-run this command under `accelerate launch` (data parallel on this "
            "machine: one process per GPU, gloo on CPUs)."
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
    report_to: Annotated[
        str | None,
        typer.Option(
            "--report-to",
            help="Experiment trackers, comma-separated (accelerate's: tensorboard, mlflow, wandb, trackio, "
            "...; default none): config, training-log rows and final metrics; local files in <run>/trackers.",
        ),
    ] = None,
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
    from speckd_bench.config.run_config import parse_sets
    from speckd_bench.engine.recipe import build_run_config, run_once
    from speckd_bench.engine.tracking import parse_report_to
    from speckd_bench.progress import SETTINGS
    from speckd_bench.records.store import find_complete

    trackers = parse_report_to(report_to)
    SETTINGS.logging_steps = logging_steps
    _discover(plugins)
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
    overrides.update({k: v for k, v in flags.items() if v is not None})
    overrides.update(_eval_flags(eval_suite, lm_eval, lm_eval_include))
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
        path = run_once(cfg, quiet=quiet, report_to=trackers)
        if quiet and _is_main():
            print(path)


def _is_main() -> bool:
    from speckd_bench.distributed import process_context

    return process_context().is_main


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
    from speckd_bench.config.run_config import load_yaml_config
    from speckd_bench.engine.recipe import run_once
    from speckd_bench.engine.run_state import find_run, resume_config

    if seed and len(seed) > 1:
        raise UserError("--resume continues one run: pass at most one --seed (the run's own)")
    given = {**(load_yaml_config(config) if config else {}), **overrides}
    named = {"method.name": method, "preset": preset, "seed": seed[0] if seed else None}
    given.update({k: v for k, v in named.items() if v is not None})
    results_dir = Path(str(overrides.get("results_dir", "results")))
    run_dir = find_run(results_dir, which)
    path = run_once(resume_config(run_dir, given), quiet=quiet, resume=run_dir, report_to=report_to)
    if quiet and _is_main():
        print(path)


@contextmanager
def _writing(hint: str) -> Iterator[None]:
    """Outputs that cannot be written (a read-only folder, a full disk) fail as one line with a hint."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or 'the output'}: {exc.strerror}; {hint}") from None


ResultsDirOpt = Annotated[Path, typer.Option(help="Directory holding runs/*/record.json.")]


def _sections(
    results_dir: Path,
    *,
    task: list[str] | None = None,
    method: list[str] | None = None,
    teacher: list[str] | None = None,
    student: list[str] | None = None,
    since: str | None = None,
    metric: list[str] | None = None,
    baseline: str | None = None,
    sort: str = "metric",
    include_interrupted: bool = False,
    runs: set[str] | None = None,
):
    """Load the records (listing skipped ones on stderr) and build the leaderboard sections; `runs`: only
    these run ids."""
    from speckd_bench.leaderboard.report import Filters, build_sections, parse_since, usable_records
    from speckd_bench.records.store import load_records

    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; pass --results-dir DIR")

    filters = Filters(
        tasks=task or [],
        methods=method or [],
        teachers=teacher or [],
        students=student or [],
        since=parse_since(since) if since else None,
    )
    loaded = load_records(results_dir, include_interrupted=include_interrupted)
    records, unusable = usable_records(loaded.records, results_dir)
    for path, reason in [*loaded.skipped, *unusable]:
        warn(f"skipped {path}: {reason}")
    if not records:
        warn(f"no complete run records under {results_dir}/runs")
    records = [r for r in records if runs is None or r.run_id in runs]
    sections = build_sections(
        records, results_dir, filters=filters, metrics=metric, baseline=baseline, sort=sort
    )
    for note in dict.fromkeys(note for section in sections for note in section.notes):
        warn(f"note: {note}")
    return sections


@app.command()
def table(
    results_dir: ResultsDirOpt = Path("results"),
    format: Annotated[str, typer.Option("--format", help="rich | md | csv | latex | html | json")] = "rich",
    baseline: Annotated[
        str | None,
        typer.Option(help="Method to compare with: Δ of the mean with a 95% paired bootstrap CI."),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric column(s) (repeatable; default: the task's main).")
    ] = None,
    task: Annotated[list[str] | None, typer.Option(help="Only this training task or eval set.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Only this method (repeatable).")] = None,
    teacher: Annotated[list[str] | None, typer.Option(help="Only this teacher (repeatable).")] = None,
    student: Annotated[list[str] | None, typer.Option(help="Only this student (repeatable).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs created on or after this date (YYYY-MM-DD[THH:MM]).")
    ] = None,
    sort: Annotated[
        str, typer.Option(help="metric | delta | method | spikes | grad_cv | diverged | tok_s | wall")
    ] = "metric",
    include_interrupted: Annotated[
        bool,
        typer.Option("--include-interrupted", help="Also tabulate runs stopped by Ctrl-C (else skipped)."),
    ] = False,
) -> None:
    """Leaderboard: mean ± std over training seeds per group of runs, Δ to a baseline, stability, cost."""
    from speckd_bench.leaderboard.report import check_format, render

    check_format(format)
    sections = _sections(
        results_dir,
        task=task,
        method=method,
        teacher=teacher,
        student=student,
        since=since,
        metric=metric,
        baseline=baseline,
        sort=sort,
        include_interrupted=include_interrupted,
    )
    rendered = render(sections, format)
    if isinstance(rendered, str):
        sys.stdout.write(rendered)
    else:
        out.print(rendered)


@app.command()
def plot(
    results_dir: ResultsDirOpt = Path("results"),
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where the PNGs go (default: RESULTS_DIR/plots).")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric bar chart(s) (default: the task's main).")
    ] = None,
    task: Annotated[list[str] | None, typer.Option(help="Only this training task or eval set.")] = None,
    method: Annotated[list[str] | None, typer.Option(help="Only this method (repeatable).")] = None,
    teacher: Annotated[list[str] | None, typer.Option(help="Only this teacher (repeatable).")] = None,
    student: Annotated[list[str] | None, typer.Option(help="Only this student (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Only runs created on or after this date.")] = None,
) -> None:
    """PNG plots: loss, grad-norm and TAR curves per method (band over seeds), metric bars with error bars."""
    from speckd_bench.publish.plots import write_plots

    sections = _sections(
        results_dir, task=task, method=method, teacher=teacher, student=student, since=since, metric=metric
    )
    with _writing("pass --out DIR"):
        for path in write_plots(sections, out_dir or results_dir / "plots"):
            print(path)


@app.command()
def report(
    results_dir: ResultsDirOpt = Path("results"),
    out_file: Annotated[
        Path | None, typer.Option("--out", help="README to write (default: RESULTS_DIR/README.md).")
    ] = None,
    baseline: Annotated[str, typer.Option(help="Method every row is compared with.")] = "fkl",
    method: Annotated[
        str, typer.Option(help="Method whose difference to the baseline is judged.")
    ] = "speckd",
    task: Annotated[list[str] | None, typer.Option(help="Only this training task or eval set.")] = None,
    command: Annotated[
        str | None, typer.Option(help="The command that produced the runs, quoted in the README.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Metric column(s), the first one judged and sorted by (default: the task's main)."),
    ] = None,
    notes: Annotated[
        Path | None,
        typer.Option(help="Markdown file with the reading of the results, placed under the README's title."),
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option(help="Report exactly the runs of this sweep file (docs/sweeps.md).")
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write this self-contained HTML page instead of the README (sortable tables, plots inline).",
        ),
    ] = None,
) -> None:
    """Write RESULTS_DIR/README.md (table, plots, command, machine, sizes, wall time, significance)."""
    from speckd_bench.publish.results_readme import write_results_readme

    if notes is not None and not notes.is_file():
        raise UserError(f"--notes {notes}: no such file")
    runs = sweep_run_ids(sweep, results_dir) if sweep is not None else None
    sections = _sections(results_dir, task=task, baseline=baseline, metric=metric, runs=runs)
    if not sections:
        raise UserError(f"no complete run records under {results_dir}/runs to report on")
    reading = _read_notes(notes) if notes else None
    with _writing("pass --out FILE (or --html FILE) in a writable folder"):
        if html_file is not None:
            from speckd_bench.publish.html_page import write_page

            print(write_page(sections, html_file, baseline=baseline, method=method, command=command))
            return
        written = write_results_readme(
            sections,
            results_dir,
            out_file or results_dir / "README.md",
            baseline=baseline,
            method=method,
            command=command,
            notes=reading,
        )
    for path in written:
        print(path)


def _read_notes(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--notes {path}: cannot read it ({exc}); pass a UTF-8 markdown file") from None


tasks_app = typer.Typer(
    help="List the registered tasks and suites; validate a task file; export tasks for lm-eval.",
    add_completion=False,
)
app.add_typer(tasks_app, name="tasks")


@tasks_app.callback(invoke_without_command=True)
def tasks(ctx: typer.Context, plugins: PluginsOpt = None) -> None:
    """List the registered tasks (with their sources) and suites."""
    from speckd_bench.data.tasks import SUITES, TASKS

    _discover(plugins)
    if ctx.invoked_subcommand is not None:
        return
    t = Table(title="tasks")
    t.add_column("name", no_wrap=True)
    for col in ("from", "kind", "metrics", "decoding", "description", "sources", "lm-eval"):
        t.add_column(col, overflow="fold")
    for name, spec in TASKS.items():
        sources = "\n".join(f"{split}: {src.describe()}" for split, src in spec.splits.items())
        origin = "built-in" if spec.plugin_dir is None else f"plugin {spec.plugin_dir}"
        t.add_row(
            name, origin, spec.kind, ", ".join(spec.metrics), spec.decoding, spec.description, sources,
            ", ".join(spec.lm_eval),
        )  # fmt: skip
    out.print(t)
    s = Table(title="suites (--eval-suite)")
    s.add_column("name", no_wrap=True)
    for col in ("eval sets", "decoding", "description"):
        s.add_column(col, overflow="fold")
    for name, suite in SUITES.items():
        s.add_row(name, ", ".join(suite.sets), suite.decoding or "the run's", suite.description)
    out.print(s)


def _mirror_has(files: list[str], data_dir: Path | None) -> bool:
    from speckd_bench.config.run_config import DataConfig
    from speckd_bench.data.rows import mirror_dir

    base = mirror_dir(DataConfig(data_dir=str(data_dir) if data_dir else None))
    return base is not None and bool(files) and all((base / f).is_file() for f in files)


@tasks_app.command("validate")
def tasks_validate(
    file: Annotated[Path, typer.Argument(help="A task (or suite) YAML file.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Check the rows in this mirror (else $SPECKD_DATA_DIR).")
    ] = None,
) -> None:
    """Check a task file against the schema, and its rows where the local mirror has them."""
    from speckd_bench.config.run_config import DataConfig
    from speckd_bench.data.rows import load_split
    from speckd_bench.data.tasks import Suite, check_suite, load_plugin_file

    spec = load_plugin_file(file)
    if isinstance(spec, Suite):
        check_suite(spec)
        say(f"ok: suite {spec.name} = {', '.join(spec.sets)}")
        return
    hook = f", hook {spec.hook}" if spec.hook else ""
    lines = [f"ok: task {spec.name} ({spec.kind}; metrics {', '.join(spec.metrics)}{hook})"]
    cfg = DataConfig(data_dir=str(data_dir) if data_dir else None)
    for split, src in spec.splits.items():  # every row is checked before anything is printed
        if _mirror_has(src.mirror_files, data_dir):
            rows = load_split(spec, split, cfg)
            row = rows.rows[0]
            lines += [
                f"  {split}: {len(rows.rows)} rows from {rows.source}, all render",
                f"    first prompt ends: {spec.render(row)[-120:]!r}",
                f"    its references: {[r[:80] for r in spec.references(row)]!r}",
            ]
        else:
            lines.append(f"  {split}: {src.describe()} (not in the local mirror; rows not checked)")
    for line in lines:
        say(line)


@tasks_app.command("export-lmeval")
def tasks_export_lmeval(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the lm-eval YAML tasks.")],
    task: Annotated[
        list[str] | None, typer.Option(help="Task to export (repeatable; default: all in the mirror).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")] = None,
    max_rows: Annotated[int, typer.Option(help="Rows per task; 0 = all.")] = 0,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Generation budget (default: the task's eval.max_new_tokens).")
    ] = None,
) -> None:
    """Write our tasks as lm-eval tasks (speckd_<task>) over the local rows, for lm-eval --include_path."""
    from speckd_bench.config.run_config import DataConfig
    from speckd_bench.data.tasks import TASKS
    from speckd_bench.evaluation.lmeval import export_tasks

    names = task or [n for n, t in TASKS.items() if _mirror_has(t.splits["eval"].mirror_files, data_dir)]
    if not names:
        raise UserError("no task has its eval rows in the local mirror; pass --data-dir or --task")
    specs = [TASKS.get(n) for n in names]
    cfg = DataConfig(data_dir=str(data_dir) if data_dir else None)
    exported = export_tasks(specs, out_dir, cfg, max_new_tokens, max_rows)
    for name, rows in exported:
        say(f"{name}: {len(rows.rows)} rows from {rows.source}")
    listed = ",".join(name for name, _ in exported)
    say(f"run: lm-eval --model hf --model_args pretrained=MODEL --include_path {out_dir} --tasks {listed}")


bench_app = typer.Typer(
    help="Benchmarks: every variant measured in one process, printed as a markdown table with the machine.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
app.add_typer(sweep_app, name="sweep")

BenchDeviceOpt = Annotated[str, typer.Option(help="auto (cuda when available), cpu or cuda.")]
BenchOutOpt = Annotated[Path | None, typer.Option("--out", help="Also write the table to this file.")]


def _bench_output(text: str, path: Path | None) -> None:
    say(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _bench_device(device: str) -> str:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    return device


@bench_app.command("kd-step")
def bench_kd_step(
    size: Annotated[
        str, typer.Option(help="small (CPU, seconds), smollm2 (the default pair), qwen (GPU).")
    ] = "small",
    device: BenchDeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="Parameter dtype: auto (bf16 on CUDA, fp32 on CPU).")] = "auto",
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per variant (the median is shown).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps per variant first.")] = 2,
    chunk_rows: Annotated[int, typer.Option(min=0, help="Target rows per fused chunk (0: automatic).")] = 0,
    out_file: BenchOutOpt = None,
) -> None:
    """One KD optimiser step: naive full logits vs the plain and fused paths (and Liger if installed)."""
    from speckd_bench.benchmarks import kd_step

    if size not in kd_step.SIZES:
        raise UserError(f"--size {size!r}: use one of {', '.join(kd_step.SIZES)}")
    if dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {dtype!r}: use auto, float32 or bfloat16")
    rows, facts = kd_step.main(size, _bench_device(device), dtype, steps, warmup, chunk_rows)
    _bench_output(kd_step.format_table(rows, facts, size), out_file)


@bench_app.command("gpu-smoke", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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
    import torch

    from speckd_bench.benchmarks import generate

    resolved = _bench_device(device)
    if resolved == "auto":
        resolved = "cuda" if torch.cuda.is_available() else "cpu"
    _bench_output(generate.format_table(generate.main(resolved, size)), out_file)


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

    if size not in decode_parity.SIZES:
        raise UserError(f"--size {size!r}: use one of {', '.join(decode_parity.SIZES)}")
    rows, facts = decode_parity.main(size, _bench_device(device), steps)
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
    out_file: BenchOutOpt = None,
) -> None:
    """The default run from cold caches, then warm (and with the teacher cache): wall and stage seconds."""
    from speckd_bench.benchmarks import default_run

    overrides = {} if max_train_examples is None else {"data.max_train_examples": max_train_examples}
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
    dtype: Annotated[str, typer.Option(help="Teacher dtype: auto, float32 or bfloat16.")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")] = None,
    out_file: BenchOutOpt = None,
) -> None:
    """The teacher against the trivial floors per prompt format and answer length."""
    from speckd_bench.benchmarks import teacher_protocol

    if dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {dtype!r}: use auto, float32 or bfloat16")
    lengths = sorted(new_tokens or [64, 128, 256])
    text = teacher_protocol.main(task or ["dolly"], rows, lengths, dtype, str(data_dir) if data_dir else None)
    _bench_output(text, out_file)


@app.command("eval")
def eval_(
    run: Annotated[str | None, typer.Option("--run", help="Run id (or run directory) to evaluate.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Or a model: built-in name, hub id or local dir.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Eval set (default: the run's task).")] = None,
    eval_suite: EvalSuiteOpt = None,
    lm_eval: LmEvalOpt = None,
    lm_eval_include: LmEvalIncludeOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local mirror (else $SPECKD_DATA_DIR).")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where runs/ and evals/ live.")] = Path("results"),
    max_eval_examples: Annotated[int | None, typer.Option(help="Rows per eval set.")] = None,
    preset: Annotated[str | None, typer.Option(help="With --model: default | reference | tiny")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="With --model: YAML run config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. eval.max_new_tokens=128 (repeatable).")
    ] = None,
    plugins: PluginsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars or messages.")] = False,
) -> None:
    """Evaluate a recorded run's checkpoint (or a model) without training; writes an eval record."""
    from speckd_bench.config.run_config import parse_sets
    from speckd_bench.engine.eval_run import eval_run, evaluate_model
    from speckd_bench.engine.recipe import build_run_config

    if (run is None) == (model is None):
        raise UserError("eval needs exactly one of --run RUN_ID and --model NAME")
    _discover(plugins)
    overrides: dict[str, object] = dict(parse_sets(set_ or []))
    flags = {
        "task": task,
        "data.data_dir": str(data_dir) if data_dir else None,
        "data.max_eval_examples": max_eval_examples,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    overrides.update(_eval_flags(eval_suite, lm_eval, lm_eval_include))
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


@app.command()
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


@app.command()
def methods(
    name: Annotated[
        str | None, typer.Argument(help="A method: list all its settings with their help.")
    ] = None,
    plugins: PluginsOpt = None,
) -> None:
    """List the registered methods (loss, settings of their own, paper), or one method's every setting."""
    from speckd_bench.api.methods import METHODS
    from speckd_bench.api.settings import fields_of
    from speckd_bench.methods.discovery import method_config, own_settings

    _discover(plugins)
    if name is not None:
        mcfg, defaults = method_config(name)
        t = Table(title=f"method {name} ({type(mcfg).__name__}): --set method.KEY=VALUE")
        for col in ("key", "default", "help"):
            t.add_column(col, overflow="fold")
        for key, (meta, _) in fields_of(mcfg).items():
            value = defaults.get(f"method.{key}", getattr(mcfg, key))
            choices = f" ({' | '.join(meta['choices'])})" if meta.get("choices") else ""
            t.add_row(key, str(value), meta.get("help", "") + choices)
        out.print(t)
        return
    t = Table(title="methods (speckd-bench methods NAME: all settings of one)")
    for col in ("name", "description", "loss", "own settings", "paper"):
        t.add_column(col, overflow="fold")
    for key, m in METHODS.items():
        own = ", ".join(f"{k}={v}" for k, v in own_settings(m).items())
        loss = "divergence to the teacher" if m.uses_teacher else "cross-entropy"
        t.add_row(key, m.description, loss, own, m.paper)
    out.print(t)


def _wrong_place(exc: Exception) -> str:
    """For an option given after a subcommand but owned by a command above it: where it belongs."""
    ctx, name = getattr(exc, "ctx", None), getattr(exc, "option_name", None)
    parent = ctx.parent if ctx is not None else None
    while parent is not None and name:
        if any(name in param.opts for param in parent.command.params):
            sub = ctx.command_path.removeprefix(parent.command_path).strip()
            return f"; {name} belongs to `{parent.command_path}`: put it before `{sub}`"
        parent = parent.parent
    return ""


def usage_error_line(exc: Exception) -> str:
    """A click/typer usage error as one line: what is wrong, for which command, and where its help is."""
    text = " ".join(str(exc.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "speckd-bench"
    return f"error: {text} for `{command}`{_wrong_place(exc)}; see {command} --help"


def main() -> None:
    sigterm_as_interrupt()  # a scheduler's SIGTERM stops a run like Ctrl-C: checkpointed, resumable
    try:
        code = app(standalone_mode=False, prog_name="speckd-bench")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's click usage errors (unknown option, missing argument)
        print(usage_error_line(exc), file=sys.stderr)
        sys.exit(2)
    if isinstance(code, int) and code:  # non-standalone typer returns exit codes; 130 is a bare Ctrl-C
        if code == 130:
            print("aborted", file=sys.stderr)
        sys.exit(code)
