"""`tasks`: list the registered tasks and suites, validate a task file, export tasks for lm-eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from speckd_bench.cli.options import MirrorOpt, PluginsOpt, complete_tasks, discover
from speckd_bench.config.run_config import DataConfig
from speckd_bench.progress import console, say

tasks_app = typer.Typer(
    help="List the registered tasks and suites; validate a task file; export tasks for lm-eval.",
    add_completion=False,
)


@tasks_app.callback(invoke_without_command=True)
def tasks(ctx: typer.Context, plugins: PluginsOpt = None) -> None:
    """List the registered tasks (with their sources) and suites."""
    from speckd_bench.data.tasks import SUITES, TASKS

    discover(plugins)
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
    console.print(t)
    s = Table(title="suites (--eval-suite)")
    s.add_column("name", no_wrap=True)
    for col in ("eval sets", "decoding", "description"):
        s.add_column(col, overflow="fold")
    for name, suite in SUITES.items():
        s.add_row(name, ", ".join(suite.sets), suite.decoding or "the run's", suite.description)
    console.print(s)


def _data_config(data_dir: Path | None) -> DataConfig:
    """The data settings of a --data-dir option (None: $SPECKD_DATA_DIR)."""
    return DataConfig(data_dir=str(data_dir) if data_dir else None)


@tasks_app.command("validate")
def tasks_validate(
    file: Annotated[Path, typer.Argument(help="A task (or suite) YAML file.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Check the rows in this mirror (else $SPECKD_DATA_DIR).")
    ] = None,
) -> None:
    """Check a task file against the schema, and its rows where the local mirror has them."""
    from speckd_bench.data.rows import in_mirror, load_split
    from speckd_bench.data.tasks import Suite, check_suite, load_plugin_file

    spec = load_plugin_file(file)
    if isinstance(spec, Suite):
        check_suite(spec)
        say(f"ok: suite {spec.name} = {', '.join(spec.sets)}")
        return
    hook = f", hook {spec.hook}" if spec.hook else ""
    lines = [f"ok: task {spec.name} ({spec.kind}; metrics {', '.join(spec.metrics)}{hook})"]
    cfg = _data_config(data_dir)
    for split, src in spec.splits.items():  # every row is checked before anything is printed
        if in_mirror(src, cfg):
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


def _teacher_tokenizer(teacher: str) -> Any:
    """The tokenizer a run with this teacher prompts with (the teacher's), without loading the model."""
    from transformers import AutoTokenizer

    from speckd_bench.errors import UserError
    from speckd_bench.models.loading import SMOLLM2, TINY, smollm2_dir

    try:
        return AutoTokenizer.from_pretrained(smollm2_dir() if teacher in (SMOLLM2, TINY) else teacher)
    except OSError as exc:
        raise UserError(
            f"cannot load the tokenizer of teacher {teacher!r} ({str(exc).splitlines()[0][:120]}); "
            "the prompts are cut with it"
        ) from None


@tasks_app.command("export-lmeval")
def tasks_export_lmeval(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the lm-eval YAML tasks.")],
    task: Annotated[
        list[str] | None,
        typer.Option(
            help="Task to export (repeatable; default: all in the mirror).", autocompletion=complete_tasks
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="Prompt and score as a run of this preset does (chat template, prompt cut, budget)."
        ),
    ] = "default",
    teacher: Annotated[
        str | None, typer.Option(help="The run's teacher, whose tokenizer cuts prompts.")
    ] = None,
    data_dir: MirrorOpt = None,
    max_rows: Annotated[int, typer.Option(help="Rows per task; 0 = all.")] = 0,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(help="Generation budget (default: a run's eval.max_new_tokens for the task)."),
    ] = None,
) -> None:
    """Write our tasks as lm-eval tasks (speckd_<task>) over the local rows, with the prompts a run of
    --preset builds, and print the lm-eval command that scores a saved student on them as that run does."""
    from speckd_bench.config.run_config import build_config
    from speckd_bench.data.tasks import TASKS, run_defaults
    from speckd_bench.evaluation.lmeval import export_tasks, lm_eval_command, mirrored_tasks
    from speckd_bench.methods.discovery import method_config

    names = task or mirrored_tasks(_data_config(data_dir))
    flags = {"model.teacher": teacher, "model.student": teacher} if teacher else {}  # the student: no prompt
    if data_dir:
        flags["data.data_dir"] = str(data_dir)
    configs = {
        name: build_config(
            method_config=method_config,
            preset=preset,
            overrides={**flags, "task": name},
            task_defaults=run_defaults,
        )
        for name in names
    }  # per task: its own defaults (prompt length, budget) under the preset, as `run --task` resolves them
    cfg = configs[names[0]]
    exported = export_tasks(
        [TASKS.get(n) for n in names],
        out_dir,
        {name: c.data for name, c in configs.items()},
        {name: max_new_tokens or c.eval.max_new_tokens for name, c in configs.items()},
        max_rows,
        tokenizer=_teacher_tokenizer(cfg.model.teacher),
    )
    for name, rows in exported:
        say(f"{name}: {len(rows.rows)} rows from {rows.source}")
    say(f"run: {lm_eval_command(out_dir, [name for name, _ in exported], cfg)}")
