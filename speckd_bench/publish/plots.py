"""PNG plots of leaderboard sections: training curves (loss, grad norm, TAR) per method with a band over
training seeds; learning curves (teacher-forced fidelity every train.curve_every steps) likewise; a bar
chart of each shown metric per method with error bars, the warm-start student, the teacher and the best
floor drawn across it; and a forest plot of each method's Δ to the baseline with its Holm-adjusted
t-interval over training seeds. Every metric axis names its unit and which way is better.

Figures are drawn on matplotlib's Agg canvas (no display needed); the `*_figure` functions return them
unsaved.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from speckd_bench.api.metrics import Better, better
from speckd_bench.leaderboard.columns import SIGNIFICANT
from speckd_bench.leaderboard.curves import curve_metrics, group_curve, scored_on
from speckd_bench.leaderboard.rows import LeaderboardRow, best_row
from speckd_bench.leaderboard.sections import Group, Section

# log field -> (file stem, y label, log scale, one panel per method)
CURVES = {
    "loss": ("loss", "training loss (each method's own objective, scales differ)", True, False),
    "grad_norm": ("grad_norm", "gradient norm (L2, before clipping)", False, True),
    "tar": ("tar", "token acceptance rate, 0-1 (SpecKD gate)", False, False),
}
UNITS = {"tf_fkl": "nats/token", "tf_rkl": "nats/token", "tf_tvd": "0-1 per token", "tf_top1": "% of tokens"}
"""Units of the fidelity metrics; the task metrics are on a 0-100 scale."""


def unit(metric: str) -> str:
    return UNITS.get(metric.removesuffix("_prompt"), "0-100")


def axis_label(metric: str, prefix: str = "") -> str:
    """ "tf_tvd [0-1 per token] ↓ (lower is better)": the metric, its unit and which way is better."""
    way = "↓ (lower is better)" if better(metric) is Better.LOWER else "↑ (higher is better)"
    return _plain(f"{prefix}{metric} [{unit(metric)}] {way}")


def _plain(text: str) -> str:
    """Text that matplotlib shows as written: a `$` would start mathtext (and `a$x^2$b` fail to draw)."""
    return text.replace("$", r"\$")


def _title(fig: Figure, text: str) -> None:
    """The figure's title, centred over the whole figure (axes and legend) and wrapped to its width, so a
    long one is never cut at the canvas edge."""
    width = max(40, int(fig.get_figwidth() * 12))  # characters of 10-point text per line (about 14 fit)
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    fig.suptitle(_plain("\n".join(lines)), fontsize=10)


def _legend_width(labels: list[str]) -> float:
    """Inches a figure needs for axes of about 5.5 inches beside a legend of these labels (8 points)."""
    return 5.5 + 0.06 * max((len(label) for label in labels), default=0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def _new_figure(width: float = 9.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(labels: list[str]) -> dict[str, tuple[float, ...]]:
    """One stable colour per group label, shared by every figure of a protocol: tab10's ten, then their
    light shades (tab20's), so up to twenty groups never share a colour."""
    dark_then_light = [*colormaps["tab20"].colors[0::2], *colormaps["tab20"].colors[1::2]]
    palette = list(colormaps["tab10"].colors) if len(labels) <= 10 else dark_then_light
    return {label: palette[i % len(palette)] for i, label in enumerate(sorted(labels))}


def _series(group: Group, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the mean, min and max over the group's runs of one log field at each step."""
    by_step: dict[int, list[float]] = {}
    for run in group.runs:
        for row in run.log:
            value = row.get(field)
            if value is not None and np.isfinite(value):
                by_step.setdefault(row["step"], []).append(float(value))
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    return (
        np.array(steps),
        np.array([np.mean(v) for v in values]),
        np.array([min(v) for v in values]),
        np.array([max(v) for v in values]),
    )


def _subtitle(section: Section) -> str:
    p = section.protocol
    base = f"{p['task']} · {p['model.teacher']} → {p['model.student']} · preset {p['preset']}"
    shown = ("task", "model.teacher", "model.student", "preset")
    extra = ", ".join(f"{k}={p.get(k)}" for k in section.varying if k not in shown)
    return f"{base} · {extra}" if extra else base


def _draw(ax, group: Group, field: str, color) -> bool:
    steps, mean, low, high = _series(group, field)
    if steps.size == 0:
        return False
    label = _plain(f"{group.label} (n={len(group.runs)})")
    ax.plot(steps, mean, color=color, label=label, linewidth=1.6, marker="o" if steps.size < 3 else None)
    ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    return True


def _style(ax, log_scale: bool) -> None:
    if log_scale and all((line.get_ydata() > 0).all() for line in ax.get_lines()):
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        low, high = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if high / low <= 20 else NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def curve_figure(groups: list[Group], field: str, section: Section, colors: dict) -> Figure | None:
    """One figure per log field: one axes for all methods, or one panel per method; None when no run
    logged the field."""
    _, ylabel, log_scale, panels = CURVES[field]
    drawn = [g for g in groups if _series(g, field)[0].size]
    if not drawn:
        return None
    title = f"{ylabel}: mean over training seeds, band = min to max\n{_subtitle(section)}"
    if panels:
        cols = min(3, len(drawn))
        rows = -(-len(drawn) // cols)
        fig = _new_figure(3.4 * cols + 0.6, 2.4 * rows + 0.8)
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, group in zip(axes, drawn, strict=False):
            _draw(ax, group, field, colors[group.label])
            label = f"{group.label} (n={len(group.runs)})"
            ax.set_title(_plain(textwrap.fill(label, 50)), fontsize=9)
            _style(ax, log_scale)
        for i, ax in enumerate(axes):
            ax.set_visible(i < len(drawn))
            ax.tick_params(labelbottom=i + cols >= len(drawn))  # the lowest panel of each column
        fig.supxlabel("optimiser step", fontsize=9)
        fig.supylabel(ylabel, fontsize=9)
    else:
        fig = _new_figure(max(9.0, _legend_width([f"{g.label} (n={len(g.runs)})" for g in drawn])))
        ax = fig.add_subplot()
        for group in drawn:
            _draw(ax, group, field, colors[group.label])
        _style(ax, log_scale)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, title)
    return fig


def _reference_lines(section: Section, metric: str) -> list[tuple[LeaderboardRow, dict[str, str]]]:
    """Reference rows drawn across the bar chart, with their line style: the warm-start (init) student,
    the teacher and the best floor, where recorded."""
    rows = [r for r in section.references if r.mean(metric) is not None]
    floor = best_row([r for r in rows if r.source == "floor"], metric)
    picks = [
        (next((r for r in rows if r.source == "init"), None), {"color": "grey", "linestyle": "--"}),
        (next((r for r in rows if r.source == "teacher"), None), {"color": "black", "linestyle": ":"}),
        (floor, {"color": "tab:red", "linestyle": "-."}),
    ]
    return [(row, style) for row, style in picks if row is not None]


def bar_figure(section: Section, metric: str, colors: dict) -> Figure:
    """Mean ± std of `metric` per method over training seeds, each seed a dot, reference lines across."""
    groups = section.groups
    fig = _new_figure(max(5.0, 1.1 * len(groups) + 3.5), 5.0)
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    summaries = [g.row.metrics[metric] for g in groups]
    means = [s.mean or 0.0 for s in summaries]
    stds = [s.std or 0.0 for s in summaries]
    ax.bar(x, means, yerr=stds, capsize=5, color=[colors[g.label] for g in groups], alpha=0.85, zorder=2)
    rng = np.random.default_rng(0)
    for i, summary in enumerate(summaries):
        values = [v for v in summary.values if np.isfinite(v)]
        jitter = rng.uniform(-0.15, 0.15, len(values))
        ax.scatter(
            i + jitter, values, color="black", s=12, zorder=3, label="one training seed" if i == 0 else None
        )
    for row, style in _reference_lines(section, metric):
        ax.axhline(row.mean(metric), linewidth=1, label=_plain(row.label), zorder=1, **style)
    labels = [
        _plain(f"{textwrap.fill(g.label, 16, break_long_words=False)}\nn={len(g.runs)}") for g in groups
    ]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(axis_label(metric))
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, f"{section.eval_set}: {metric}, mean ± std over training seeds\n{_subtitle(section)}")
    return fig


def forest_figure(section: Section, colors: dict) -> Figure | None:
    """Each method's Δ to the section's baseline, one panel per shown metric: the difference of the means
    with its Holm-adjusted t-interval over training seeds (a hollow dot where none could be computed) and
    the Holm mark; None when the section has no baseline."""
    base = next((r for r in section.methods if r.is_baseline), None)
    rows = [r for r in section.methods if not r.is_baseline]
    metrics = [m for m in section.metrics if any(r.delta.get(m) for r in rows)]
    if base is None or not metrics:
        return None
    cols = min(3, len(metrics))
    ticks = [_plain(f"{r.label} (n={r.n})") for r in rows]
    label_room = max(0.8, 0.065 * max(len(t) for t in ticks))  # inches of the method names on the left
    fig = _new_figure(4.2 * cols + label_room, (0.35 * len(rows) + 1.4) * -(-len(metrics) // cols) + 0.8)
    axes = fig.subplots(-(-len(metrics) // cols), cols, sharey=True, squeeze=False).ravel()
    y = np.arange(len(rows))[::-1]
    for ax, metric in zip(axes, metrics, strict=False):
        ax.axvline(0.0, color="black", linewidth=1)
        for row, at in zip(rows, y, strict=True):
            delta = row.delta.get(metric)
            if delta is None:
                continue
            color = colors.get(row.label, "black")
            if delta.low is None:
                ax.plot(delta.diff, at, "o", mfc="white", color=color)
                continue
            err = [[delta.diff - delta.low], [delta.high - delta.diff]]
            ax.errorbar(delta.diff, at, xerr=err, fmt="o", color=color, capsize=4)
            if delta.significant:
                ax.annotate(SIGNIFICANT, (delta.high, at), xytext=(4, -4), textcoords="offset points")
        side = "left" if better(metric) is Better.LOWER else "right"
        ax.set_xlabel(axis_label(metric, "Δ ") + f"\nbetter than {_plain(base.label)}: to the {side}")
        ax.set_yticks(y, ticks, fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    for i, ax in enumerate(axes):
        ax.set_visible(i < len(metrics))
    title = (
        f"{section.eval_set}: Δ to {base.label} (n={base.n}), Holm-adjusted t-interval over training seeds; "
        f"{SIGNIFICANT} = significant after Holm\n{_subtitle(section)}"
    )
    _title(fig, title)
    return fig


def learning_curve_figure(section: Section, metric: str, colors: dict) -> Figure | None:
    """The learning curve of `metric` per method: its mean over training seeds at each step all their
    curves scored, a min-to-max band, n in the legend, and what was left out; None when no run has one."""
    curves = [group_curve(g, metric) for g in section.groups]
    drawn = [c for c in curves if c.steps.size]
    if not drawn:
        return None
    fig = _new_figure(max(9.0, _legend_width([f"{c.group.label} (n={c.n})" for c in drawn])))
    ax = fig.add_subplot()
    for curve in drawn:
        color = colors[curve.group.label]
        label = _plain(f"{curve.group.label} (n={curve.n})")
        ax.plot(curve.steps, curve.mean, color=color, label=label, linewidth=1.6, marker="o", markersize=3)
        ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    _style(ax, log_scale=False)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(axis_label(metric))
    notes = [c.note for c in curves if c.note]
    title = (
        f"learning curve: {metric}, teacher-forced on {scored_on(section)}; mean over training seeds, "
        f"band = min to max\n{_subtitle(section)}"
    )
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, "\n".join([title, *notes]))
    return fig


def _stems(sections: list[Section]) -> list[str]:
    """The file-name stem of each section's protocol: task and preset, with a digest of the protocol when
    two protocols would share one."""
    keys = [json.dumps(s.protocol, sort_keys=True) for s in sections]
    stems = [_slug(f"{s.protocol['task']}-{s.protocol['preset']}") for s in sections]
    if len(set(stems)) < len(set(keys)):
        digests = [hashlib.sha1(k.encode()).hexdigest()[:6] for k in keys]
        stems = [f"{stem}-{digest}" for stem, digest in zip(stems, digests, strict=True)]
    return stems


def _curve_files(section: Section, stem: str, out_dir: Path) -> list[tuple[str, Path]]:
    return [(m, out_dir / f"{stem}_curve_{_slug(m)}.png") for m in curve_metrics(section)]


def curve_paths(sections: list[Section], out_dir: Path) -> list[tuple[Section, list[Path]]]:
    """Each section with the learning-curve PNGs `write_plots(sections, out_dir)` writes for it (sections
    of one protocol share them; [] for a section whose runs recorded no curve)."""
    return [
        (s, [path for _, path in _curve_files(s, stem, out_dir)])
        for s, stem in zip(sections, _stems(sections), strict=True)
    ]


def write_plots(sections: list[Section], out_dir: Path, *, curves: bool = True) -> list[Path]:
    """Training curves once per protocol (shared by its eval sets), learning curves per protocol and
    metric where runs recorded them (`curves`), a bar chart per section and metric, a forest plot of the
    Δ to the baseline per section that has one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    done: set[str] = set()
    for section, stem in zip(sections, _stems(sections), strict=True):
        key = json.dumps(section.protocol, sort_keys=True)
        colors = _colors([g.label for g in section.groups])
        if key not in done:
            done.add(key)
            for field, (name, *_) in CURVES.items():
                path, figure = (
                    out_dir / f"{stem}_{name}.png",
                    curve_figure(section.groups, field, section, colors),
                )
                if figure is not None:
                    figure.savefig(path)
                    written.append(path)
        for metric, path in _curve_files(section, stem, out_dir) if curves else []:
            figure = None if path in written else learning_curve_figure(section, metric, colors)
            if figure is not None:
                figure.savefig(path)
                written.append(path)
        for metric in section.metrics:
            path = out_dir / f"{stem}_{_slug(section.eval_set)}_{_slug(metric)}.png"
            bar_figure(section, metric, colors).savefig(path)
            written.append(path)
        forest = forest_figure(section, colors)
        if forest is not None:
            path = out_dir / f"{stem}_{_slug(section.eval_set)}_delta.png"
            forest.savefig(path)
            written.append(path)
    return written
