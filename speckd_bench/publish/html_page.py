"""`speckd-bench report --html OUT.html`: the leaderboard as one self-contained page: the tables of
`table --format html --wide` (reference rows first, Δ and intervals, stability columns, lm-eval scores)
with columns sortable by click or keyboard (best first), the core column group shown and a checkbox per
other group, the method column kept in view when a table scrolls sideways, the protocol line of every
section, the significance sentences and setup facts of the results README, and the plots (learning
curves first) embedded as base64 PNG. No framework, no network: a few lines of vanilla JS and CSS."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from speckd_bench.api.metrics import Better
from speckd_bench.caches import atomic_write_text
from speckd_bench.leaderboard.columns import CORE, GROUPS, Column, legend
from speckd_bench.leaderboard.render import headers, section_lines, table_cells
from speckd_bench.leaderboard.sections import Section
from speckd_bench.publish.plots import curve_paths, write_plots
from speckd_bench.publish.results_readme import setup_facts, significance

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
       color: #1b1f24; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
.protocol { color: #444; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; border-width: 0 1px 1px 0; padding: 4px 8px; text-align: right;
         white-space: nowrap; background: #fff; }
tr > :first-child { border-left-width: 1px; } thead th { border-top-width: 1px; }
th:first-child, td:first-child { text-align: left; position: sticky; left: 0; z-index: 1;
                                 box-shadow: 2px 0 3px -1px rgba(0, 0, 0, .15); }
th { background: #f1f4f8; cursor: pointer; user-select: none; white-space: normal; min-width: 4em;
     max-width: 11em; vertical-align: bottom; }
th:focus-visible { outline: 2px solid #0969da; outline-offset: -2px; }
.groups-toggle { border: 1px solid #d0d7de; padding: .4em .8em; margin: 1em 0; }
.groups-toggle label { margin-right: 1.2em; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tbody.reference td { color: #555; font-style: italic; background: #fafbfc; }
td.best { font-weight: 700; color: #0a6b2d; }
.legend, .facts { color: #555; font-size: .92em; }
figure { display: inline-block; margin: .5em; } figure img { max-width: 640px; border: 1px solid #d0d7de; }
""" + "".join(
    f".col-{g} {{ display: none; }} body.show-{g} .col-{g} {{ display: table-cell; }}\n"
    for g in GROUPS
    if g != CORE
)
"""The core columns always show; a column group's columns when its checkbox is ticked."""

# Click a header (or press Enter or Space on it): sort the method rows (not the reference rows) by that
# column, numbers as numbers (a cell's leading number: "0.53 ± 0.02", "+1.2 [...]"), empty or "-" cells
# last; the first sort puts the best first (ascending where lower is better or the column has no
# direction, descending where higher is better: the header's data-first), the next one reverses it.
# A column-group checkbox shows or hides its group's columns in every table.
SCRIPT = """
document.querySelectorAll(".groups-toggle input").forEach(function (box) {
  var apply = function () { document.body.classList.toggle("show-" + box.value, box.checked); };
  box.addEventListener("change", apply);
  apply();
});
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  var body = table.querySelector("tbody.groups");
  var heads = table.querySelectorAll("thead th");
  heads.forEach(function (th, col) {
    var sort = function () {
      var now = th.getAttribute("aria-sort");
      var order = now === "ascending" || now === "descending" ?
        (now === "ascending" ? "descending" : "ascending") : th.dataset.first;
      var dir = order === "ascending" ? 1 : -1;
      heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", order);
      var key = function (row) {
        var text = row.cells[col].textContent.trim();
        var num = parseFloat(text);
        return { text: text, num: isNaN(num) ? null : num };
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x.num === null || y.num === null) {
          if (x.num !== y.num) { return x.num === null ? 1 : -1; }
          return dir * x.text.localeCompare(y.text);
        }
        return dir * (x.num - y.num);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
    });
  });
});
"""


def _cell(text: str, style: str, column: Column) -> str:
    classes = " ".join([f"col-{column.group}", *(["best"] if style == "best" else [])])
    return f'<td class="{classes}">{html.escape(text)}</td>'


def _first(column: Column) -> str:
    """The order a column's first sort puts the rows in: best first (as `table --sort` does)."""
    return "descending" if column.better is Better.HIGHER else "ascending"


def _table(section: Section) -> list[str]:
    cols, cells = table_cells(section, GROUPS)
    n_ref = len(section.references)
    rows = [
        "<tr>" + "".join(_cell(t, st, c) for (t, st), c in zip(row, cols, strict=True)) + "</tr>"
        for row in cells
    ]
    head = "".join(
        f'<th scope="col" class="col-{c.group}" tabindex="0" aria-sort="none" data-first="{_first(c)}">'
        f"{html.escape(h)}</th>"
        for c, h in zip(cols, headers(cols), strict=True)
    )
    return [
        f"<h2>{html.escape(section.eval_set)}</h2>",
        f'<p class="protocol">{html.escape(section.description)}</p>',
        '<div class="scroll"><table class="leaderboard">',
        f"<thead><tr>{head}</tr></thead>",
        '<tbody class="reference">',
        *rows[:n_ref],
        '</tbody>\n<tbody class="groups">',
        *rows[n_ref:],
        "</tbody></table></div>",
        *(f"<p>{html.escape(line)}</p>" for line in section_lines(section)),
    ]


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem)
    image = f'<img alt="{name}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{name}</figcaption></figure>"


def _figures(sections: list[Section]) -> list[str]:
    """The plot module's PNGs, drawn into a temporary folder and embedded: the learning curves under
    their own heading (where runs recorded them), then the other plots."""
    with tempfile.TemporaryDirectory(prefix="speckd-plots-") as tmp:
        paths = write_plots(sections, Path(tmp))
        learning = list(dict.fromkeys(p for _, ps in curve_paths(sections, Path(tmp)) for p in ps))
        head = ["<h2>Learning curves</h2>", *map(_figure, learning)] if learning else []
        return [*head, "<h2>Plots</h2>", *(_figure(p) for p in paths if p not in learning)]


def _toggles(cols: list[Column]) -> list[str]:
    """A checkbox for each column group the tables have beyond the core."""
    present = [g for g in GROUPS if g != CORE and any(c.group == g for c in cols)]
    if not present:
        return []
    boxes = "".join(f'<label><input type="checkbox" value="{g}"> {g}</label>' for g in present)
    return [f'<fieldset class="groups-toggle"><legend>Show column groups</legend>{boxes}</fieldset>']


def render_page(sections: list[Section], *, baseline: str, method: str, command: str | None) -> str:
    """The whole page as one HTML string."""
    made_by = f"The runs were made by: <code>{html.escape(command)}</code>" if command else ""
    cols = [c for s in sections for c in table_cells(s, GROUPS)[0]]
    body = [
        "<h1>speckd-bench leaderboard</h1>",
        "<p>Generated by <code>speckd-bench report --html</code> from the run records; click a column "
        "header (or press Enter on it) to sort the methods by it, best first; tick a column group to show "
        "its columns. " + made_by + "</p>",
        *_toggles(cols),
        *(line for s in sections for line in _table(s)),
        f'<p class="legend">{html.escape(legend(cols))}</p>',
        f"<h2>{html.escape(method)} against {html.escape(baseline)}</h2>",
        *(f"<p>{html.escape(line)}</p>" for line in significance(sections, method, baseline)),
        "<h2>Setup</h2>",
        '<ul class="facts">',
        *(f"<li>{html.escape(fact)}</li>" for fact in setup_facts(sections)),
        "</ul>",
        *_figures(sections),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>speckd-bench leaderboard</title>",
            f"<style>{STYLE}</style></head><body>",
            *body,
            f"<script>{SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )


def write_page(
    sections: list[Section], out: Path, *, baseline: str, method: str, command: str | None
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_page(sections, baseline=baseline, method=method, command=command))
    return out
