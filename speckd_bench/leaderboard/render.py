"""The leaderboard's text formats: a rich table for the terminal, markdown, LaTeX (booktabs), HTML, CSV
and JSON. The tables show the column groups asked for (the core group by default: compact enough for a
README) and the legend of what they show; LaTeX and the results README lead with the compact table and
give each other group a detail table of its own; the CSV writes every declared CSV column."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.console import Group as RichGroup
from rich.table import Table
from rich.text import Text

from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.formatting import NO_VALUE, md_escape, one_line
from speckd_bench.leaderboard.columns import (
    CORE,
    GROUPS,
    LOWER,
    METHOD,
    SETTINGS,
    SIGNIFICANT,
    Column,
    columns,
    legend,
    lm_eval_names,
    table_columns,
)
from speckd_bench.leaderboard.rows import LeaderboardRow
from speckd_bench.leaderboard.sections import Section

FORMATS = ("rich", "md", "csv", "latex", "html", "json")

Cell = tuple[str, str]
"""(text, style): style 'ref' for reference rows, 'best' for the best value of a column, else ''."""


def _best(column: Column, rows: list[LeaderboardRow]) -> float | None:
    """The best value of a column that marks it among the method rows; None when they do not differ."""
    if not column.marks_best:
        return None
    values = [v for r in rows if (v := column.value(r)) is not None]
    return max(values, key=lambda v: column.better.sign * v) if len(set(values)) > 1 else None


Groups = tuple[str, ...]


def table_cells(section: Section, groups: Groups = (CORE,)) -> tuple[list[Column], list[list[Cell]]]:
    """The shown columns (of the core group and `groups`) and (text, style) cells of one section,
    reference rows first; style is 'ref' for reference rows, 'best' for the best value of a metric column
    among the methods, else ''."""
    methods = section.methods
    cols = table_columns(section.metrics, section.baseline, methods, section.references, groups)
    best = [_best(col, methods) for col in cols]
    references = [
        [(one_line(col.cell(r)) if col.reference else "", "ref") for col in cols] for r in section.references
    ]
    method_cells = [
        [
            (one_line(col.cell(r)), "best" if b is not None and col.value(r) == b else "")
            for col, b in zip(cols, best, strict=True)
        ]
        for r in methods
    ]
    return cols, references + method_cells


def headers(cols: list[Column]) -> list[str]:
    return [one_line(c.header) for c in cols]


KEYS = (METHOD, SETTINGS)
"""The columns that name a row in a group's detail table."""


def group_cells(section: Section, group: str) -> tuple[list[Column], list[list[Cell]]]:
    """A detail table of one column group: the method (and settings) and the group's columns, over the
    rows with a value in them; no rows when none has one."""
    cols, cells = table_cells(section, (group,))
    keep = [i for i, c in enumerate(cols) if any(c is k for k in KEYS) or c.group == group]
    own = [i for i in keep if cols[i].group == group]
    rows = [[row[i] for i in keep] for row in cells if any(row[i][0] not in ("", NO_VALUE) for i in own)]
    return [cols[i] for i in keep], rows


def detail_groups(
    section: Section, groups: Groups = GROUPS
) -> list[tuple[str, list[Column], list[list[Cell]]]]:
    """(group, columns, cells) of each group in `groups` (the core one aside) with a value in the
    section."""
    tables = [(g, *group_cells(section, g)) for g in groups if g != CORE]
    return [(g, cols, cells) for g, cols, cells in tables if cells]


def table_legend(sections: list[Section], groups: Groups = (CORE,)) -> str:
    """The legend of every column the sections' tables show."""
    return legend([c for s in sections for c in table_cells(s, groups)[0]])


def _styled(text: str, style: str, wrap: dict[str, str]) -> str:
    """`text` inside the format's wrapper for `style` ('{}' marks where the text goes)."""
    return wrap[style].format(text) if style in wrap and text else text


def section_lines(s: Section) -> list[str]:
    """The notes and floor verdict under a section's table."""
    return [*(f"note: {n}" for n in s.notes), *([s.floor_verdict] if s.floor_verdict else [])]


def md_table(cols: list[Column], cells: list[list[Cell]]) -> list[str]:
    """One markdown table: header, rule and a line per row."""
    wrap = {"best": "**{}**", "ref": "*{}*"}
    head = ["| " + " | ".join(map(md_escape, headers(cols))) + " |", "|" + "---|" * len(cols)]
    return head + [
        "| " + " | ".join(_styled(md_escape(t), st, wrap) for t, st in row) + " |" for row in cells
    ]


def _md(sections: list[Section], groups: Groups) -> str:
    out = []
    for s in sections:
        cols, cells = table_cells(s, groups)
        out += [f"**{md_escape(s.eval_set)}**: {md_escape(s.description)}", ""]
        out += md_table(cols, cells)
        out += [*(f"- {md_escape(line)}" for line in section_lines(s)), ""]
    return "\n".join([*out, table_legend(sections, groups), ""])


MD_WIDTH = 160
"""The widest line of a markdown detail table."""


def _fitting(cols: list[Column], cells: list[list[Cell]], width: int) -> list[list[int]]:
    """The column indexes of each markdown table a detail table is split into: the key columns, then a
    run of the group's columns, as many as fit in `width` characters a line (one too wide alone gets a
    table of its own)."""
    n_keys = sum(any(c is k for k in KEYS) for c in cols)
    chunks: list[list[int]] = []
    for i in range(n_keys, len(cols)):
        trial = [*chunks[-1], i] if chunks else [i]
        keep = [*range(n_keys), *trial]
        lines = md_table([cols[j] for j in keep], [[row[j] for j in keep] for row in cells])
        if chunks and max(map(len, lines)) <= width:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return [[*range(n_keys), *chunk] for chunk in chunks]


def md_details(section: Section, width: int = MD_WIDTH) -> list[str]:
    """The section's detail tables in markdown, a group at a time (split into several tables where one
    would be wider than `width`), each with its group's legend."""
    out = []
    for group, cols, cells in detail_groups(section):
        out += [f"**{md_escape(section.eval_set)}, {group}**", ""]
        for keep in _fitting(cols, cells, width):
            out += [*md_table([cols[j] for j in keep], [[row[j] for j in keep] for row in cells]), ""]
        out += [legend([c for c in cols if c.group == group]), ""]
    return out


_LATEX = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        "|": r"\textbar{}",
        "±": r"$\pm$",
        "×": r"$\times$",
        "→": r"$\to$",
        "Δ": r"$\Delta$",
        "·": r"$\cdot$",
        "≤": r"$\le$",
        "≥": r"$\ge$",
        LOWER: r"$\downarrow$",
        "⚠": "(!)",
        SIGNIFICANT: r"$^\dagger$",
    }
)


def _latex_escape(text: str) -> str:
    return text.translate(_LATEX)


def _tabular(cols: list[Column], cells: list[list[Cell]]) -> list[str]:
    wrap = {"best": "\\textbf{{{}}}", "ref": "\\textit{{{}}}"}
    spec = "".join("l" if any(c is k for k in KEYS) else "r" for c in cols)
    return [
        "\\begin{tabular}{" + spec + "}",
        "\\toprule",
        " & ".join(map(_latex_escape, headers(cols))) + " \\\\",
        "\\midrule",
        *(" & ".join(_styled(_latex_escape(t), st, wrap) for t, st in row) + " \\\\" for row in cells),
        "\\bottomrule",
        "\\end{tabular}",
    ]


def _latex(sections: list[Section], groups: Groups) -> str:
    """Per section the compact (core) table, then a detail table for each other group asked for."""
    out = ["% speckd-bench leaderboard; needs \\usepackage{booktabs}"]
    for s in sections:
        out += [f"% {one_line(s.eval_set)}: {one_line(s.description)}", *_tabular(*table_cells(s))]
        out += [*(f"% {one_line(line)}" for line in section_lines(s)), ""]
        for group, cols, cells in detail_groups(s, groups):
            out += [f"% {one_line(s.eval_set)}, {group}", *_tabular(cols, cells), ""]
    out.append(f"% {table_legend(sections, groups)}")
    return "\n".join(out) + "\n"


def _html(sections: list[Section], groups: Groups) -> str:
    out = ['<div class="speckd-leaderboard">']
    wrap = {"best": "<strong>{}</strong>", "ref": "<em>{}</em>"}
    for s in sections:
        cols, cells = table_cells(s, groups)
        out += [
            f"<table>\n<caption>{html.escape(s.eval_set)}: {html.escape(s.description)}</caption>",
            "<thead>",
        ]
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers(cols)) + "</tr>")
        out += ["</thead>", "<tbody>"]
        for row in cells:
            out.append(
                "<tr>" + "".join(f"<td>{_styled(html.escape(t), st, wrap)}</td>" for t, st in row) + "</tr>"
            )
        out += ["</tbody>", "</table>"]
        out += [f"<p>{html.escape(line)}</p>" for line in section_lines(s)]
    out += [f"<p>{html.escape(table_legend(sections, groups))}</p>", "</div>"]
    return "\n".join(out) + "\n"


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for no value; text that a spreadsheet would run as a formula gets a quote."""
    if value is None:
        return ""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv(sections: list[Section]) -> str:
    """One flat, numeric table of every column over every section, reference rows included (empty cell =
    no value)."""
    metrics = list(dict.fromkeys(m for s in sections for m in s.metrics))
    lm_eval = lm_eval_names([r for s in sections for r in s.methods])
    cols = [c for c in columns(metrics, None, lm_eval) if c.csv is not None]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([c.csv for c in cols])
    for r in (r for s in sections for r in s.rows):
        writer.writerow([_csv_cell(c.value(r)) for c in cols])
    return buf.getvalue()


def _strict(value: Any) -> Any:
    """The value with every NaN or infinite float inside it (dicts, lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _json(sections: list[Section]) -> str:
    """Every row of every section, reference rows first in each; strict JSON (null for NaN or inf)."""
    rows = [r.as_json() for s in sections for r in s.rows]
    return json.dumps(_strict(rows), indent=2, allow_nan=False) + "\n"


def _min_width(texts: list[str]) -> int | None:
    """A rich column's least width: its longest word with a digit in it, so that a narrow terminal wraps
    a cell between words and never splits a number (an interval's bound, a count, a share)."""
    numbers = [cell_len(w) for t in texts for w in t.split() if any(ch.isdigit() for ch in w)]
    return max(numbers, default=None)


def _rich(sections: list[Section], groups: Groups) -> RichGroup:
    parts: list[Any] = []
    styles = {"best": "bold green", "ref": "italic cyan", "": ""}
    for s in sections:
        cols, cells = table_cells(s, groups)
        table = Table(title=Text(f"{s.eval_set}: {s.description}"), title_justify="left")
        for i, (col, title) in enumerate(zip(cols, headers(cols), strict=True)):
            table.add_column(
                Text(title),
                justify="left" if any(col is k for k in KEYS) else "right",
                overflow="fold",  # words, not numbers, fold where the terminal is too narrow
                min_width=_min_width([row[i][0] for row in cells]),
            )
        for row in cells:
            table.add_row(*(Text(t, style=styles[st]) for t, st in row))
        parts.append(table)
        parts += [Text(line, style="yellow") for line in section_lines(s)]
    parts.append(Text(table_legend(sections, groups), style="dim"))
    return RichGroup(*parts)


UNWRAPPED = 100_000
"""The width rich output is laid out at where it goes to no terminal: wider than any table or legend."""


def print_rich(renderable: RichGroup, console: Console) -> None:
    """Print the rich tables: fitted to a terminal's width, wrapped between words (a terminal too narrow
    for the numbers gets longer lines, which it wraps, rather than cropped ones); anywhere else (a pipe,
    a file) at their natural width, never wrapped."""
    if console.is_terminal:
        console.print(renderable, crop=False)
    else:
        Console(file=console.file, width=UNWRAPPED, color_system=None).print(renderable)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")


def render(sections: list[Section], fmt: str, groups: Groups = (CORE,)) -> str | RichGroup:
    """The sections in one of FORMATS: a string, or a rich renderable for the terminal; the tables show
    the column groups `groups` (columns.parse_groups), the CSV and JSON every column."""
    check_format(fmt)
    if fmt in ("csv", "json"):
        return (_csv if fmt == "csv" else _json)(sections)
    return {"md": _md, "latex": _latex, "html": _html, "rich": _rich}[fmt](sections, groups)
