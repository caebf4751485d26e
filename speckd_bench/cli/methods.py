"""`methods`: the registered distillation methods, or one method's every setting."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from speckd_bench.api.settings import fields_of
from speckd_bench.cli.options import PluginsOpt, discover
from speckd_bench.progress import console


def methods(
    name: Annotated[
        str | None, typer.Argument(help="A method: list all its settings with their help.")
    ] = None,
    plugins: PluginsOpt = None,
) -> None:
    """List the registered methods (loss, settings of their own, paper), or one method's every setting."""
    from speckd_bench.api.methods import METHODS
    from speckd_bench.methods.discovery import method_config, own_settings

    discover(plugins)
    if name is not None:
        mcfg, defaults = method_config(name)
        t = Table(title=f"method {name} ({type(mcfg).__name__}): --set method.KEY=VALUE")
        for col in ("key", "default", "help"):
            t.add_column(col, overflow="fold")
        for key, (meta, _) in fields_of(mcfg).items():
            value = defaults.get(f"method.{key}", getattr(mcfg, key))
            choices = f" ({' | '.join(meta['choices'])})" if meta.get("choices") else ""
            t.add_row(key, str(value), meta.get("help", "") + choices)
        console.print(t)
        return
    t = Table(title="methods (speckd-bench methods NAME: all settings of one)")
    for col in ("name", "description", "loss", "own settings", "paper"):
        t.add_column(col, overflow="fold")
    for key, m in METHODS.items():
        own = ", ".join(f"{k}={v}" for k, v in own_settings(m).items())
        loss = "divergence to the teacher" if m.uses_teacher else "cross-entropy"
        t.add_row(key, m.description, loss, own, m.paper)
    console.print(t)
