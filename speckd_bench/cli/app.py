"""The `speckd-bench` command: the typer root with every command group registered (`-h` or `--help` on
each, `--version`, shell completion), and `main`, which turns user errors, interrupts and usage errors into
one line on stderr and an exit code."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from speckd_bench.cli import bench, leaderboard, methods, power, run, sweep, tasks
from speckd_bench.errors import EXIT_INTERRUPTED, RunInterrupted, UserError, sigterm_as_interrupt
from speckd_bench.progress import fail, plain_library_bars, say, warn

PROG = "speckd-bench"

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every subcommand inherits them
)


def _print_version(given: bool) -> None:
    if given:
        say(f"{PROG} {metadata.version(PROG)}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."
        ),
    ] = False,
) -> None:
    """speckd-bench: train a student by knowledge distillation (SpecKD or a baseline), evaluate it, and
    tabulate runs into a leaderboard."""


# `--help` lists the commands in this order, then the groups.
app.command()(run.run)
app.command()(leaderboard.table)
app.command()(leaderboard.plot)
app.command()(leaderboard.report)
app.command("eval")(run.eval_)
app.command()(run.export)
app.command()(methods.methods)
app.command()(power.power)
app.add_typer(tasks.tasks_app, name="tasks")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(sweep.sweep_app, name="sweep")


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
    text = text.replace("Value error, ", "")  # pydantic's prefix on typer's choice errors
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and param is not None and " is not one of " in text:
        # a choice, as the library's own errors read: --format 'csv' is not one of 'rich', 'json'
        text = f"{param.opts[0]} {text.split(': ', 1)[1]}"
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "speckd-bench"
    return f"error: {text} for `{command}`{_wrong_place(exc)}; see {command} --help"


def main() -> None:
    """The `speckd-bench` console script: run the command, exit with its code."""
    sigterm_as_interrupt()  # a scheduler's SIGTERM stops a run like Ctrl-C: checkpointed, resumable
    plain_library_bars()
    try:
        code = app(standalone_mode=False, prog_name=PROG)
    except UserError as exc:
        fail(f"error: {exc}")
        sys.exit(2)
    except RunInterrupted as exc:
        warn(f"interrupted: {exc}")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        warn("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # typer's click usage errors (unknown option, missing argument)
        fail(usage_error_line(exc))
        sys.exit(2)
    except OSError as exc:  # a full disk or a read-only folder met by any command: one line, exit 2
        from speckd_bench.caches import disk_error

        error = disk_error(exc, Path(exc.filename).parent if exc.filename else Path.cwd())
        if error is exc:
            raise
        fail(f"error: {error}")
        sys.exit(2)
    if isinstance(code, int) and code:  # non-standalone typer returns exit codes; 130 is a bare Ctrl-C
        if code == EXIT_INTERRUPTED:
            warn("aborted")
        sys.exit(code)
