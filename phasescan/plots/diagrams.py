"""The figures of a whole sweep, each a function returning a matplotlib Figure: the phase
diagram (with the boundary), the metric heat maps, the paper's scatter views, the metric
distributions against the thresholds, the circle shares. `draw` saves them."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors
from matplotlib.figure import (
    Figure,  # object API: no pyplot state, no GUI backend needed
)
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter

from ..analysis import table
from ..core.classify import ALGORITHMS, LEARNING_PHASES
from .style import CLASS_COLORS, COLORS, LOG_AXES, OKABE_ITO, PHASE_COLORS, label, pooled_values

CIRCULAR_MIN = 0.995  # the paper keeps models with circularity >= 99.5% in its scatter plots

def pooled_note(pooled: list[str], frame: pd.DataFrame) -> str:
    """A title's suffix naming the task a figure shows (a task axis of one value here: one figure
    per task, table.by_task) and the swept axes whose runs it puts together."""
    task = [a for a in pooled if a in table.TASK_AXES and frame[a].nunique(dropna=False) == 1]
    rest = [a for a in pooled if a not in task]
    return ((f"; {pooled_values(frame, task)}" if task else "")
            + (f"; pooled over {pooled_values(frame, rest)}" if rest else ""))


MIN_CI_RUNS = 3  # fewer runs per cell: the bootstrap's resampled shares take 2-3 values, no interval


def interval_problem(bound) -> tuple[str, str] | None:
    """Why a boundary row's 95% bootstrap interval cannot be shown, as (what, why), or None when
    it can: too few runs per cell to resample, or every resample found the same crossing."""
    n = bound.get("runs_per_cell") if hasattr(bound, "get") else None
    if n is not None and np.isfinite(n) and n < MIN_CI_RUNS:
        return "n too small for a 95% CI", f"{int(n)} run{'s' if n != 1 else ''} per cell"
    lo, hi = bound["lo"], bound["hi"]
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return "95% CI not estimable", "every resample gives the same crossing"
    return None


def grid_position(ticks: np.ndarray, value: float) -> float:
    """Where an x value (e.g. the boundary) falls on a grid of cells drawn at 0, 1, 2, ...:
    linear between cell centres, like the boundary's own interpolation."""
    return float(np.interp(value, ticks, np.arange(len(ticks))))


# ---------------------------------------------------------------- phase diagram and heat maps

def phase_diagram(frame: pd.DataFrame, x: str, y: str, pooled: list[str], bounds: pd.DataFrame | None,
                  label_column: str = "algorithm", fragile: pd.DataFrame | None = None) -> Figure:
    """The majority class per cell: of `algorithm` with the Pizza -> Clock boundary, or of
    `learning_phase` (bounds None: the learning-phase diagram, in its own colours). `fragile`:
    the (x, y) of cells whose majority rounding could decide (analysis.stability.fragile_cells),
    outlined dashed; None: no other training was compared, and the legend says nothing."""
    cells = table.cells(frame, x, y, label_column)
    palette = CLASS_COLORS[label_column]
    xs = np.sort(cells[x].unique())
    ys = np.sort(cells[y].unique())
    note = pooled_note(pooled, frame)
    if len(ys) == 1:
        return phase_shares(cells, x, xs, y, ys[0], None if bounds is None else bounds.iloc[0], note,
                            label_column, fragile)
    fig = Figure(figsize=(max(5.0, 0.62 * len(xs) + 2.6), max(3.2, 0.45 * len(ys) + 1.8)))
    ax = fig.subplots()
    image = np.ones((len(ys), len(xs), 3))  # white where a cell has no runs
    for _, r in cells.iterrows():
        i, j = np.searchsorted(ys, r[y]), np.searchsorted(xs, r[x])
        share = r["majority_count"] / r["n"]
        strength = 0.3 + 0.7 * share  # a weak majority is drawn paler
        image[i, j] = strength * np.array(colors.to_rgb(palette[r["majority"]])) + (1 - strength)
        ink = "white" if r["majority"] in ("clock", "diverged") and share > 0.7 else "black"
        # in the cell's upper part: the boundary's diamonds sit on the row's centre line
        ax.text(j, i + (0.22 if bounds is not None else 0.0), f"{r['majority_count']}/{r['n']}",
                ha="center", va="center", fontsize=8, color=ink)
        if r["majority"] == "mixed":  # hatched: a pale vermilion cell is not a pale Pizza one
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="white",
                                   hatch="xx", lw=0, zorder=2))
    ax.imshow(image, origin="lower", aspect="auto")
    _grid_ticks(ax, x, xs, y, ys)
    handles = [Patch(color=palette[a], label=a) for a in palette if (cells["majority"] == a).any()]
    if bounds is not None:
        handles += _draw_boundary(ax, bounds, y, ys, xs)
    if fragile is not None:
        for _, r in fragile.iterrows():
            ax.add_patch(Rectangle((np.searchsorted(xs, r[x]) - 0.46, np.searchsorted(ys, r[y]) - 0.46), 0.92, 0.92,
                                   **FRAGILE_STYLE))
        handles.append(fragile_handle(len(fragile), len(cells)))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Majority {label(label_column)} per cell (k/n: runs with it / runs; paler: weaker "
                 f"majority){note}", loc="left")
    return fig


def _grid_ticks(ax, x, xs, y, ys):
    ax.set_xticks(range(len(xs)), [table.short(v) for v in xs], rotation=45 if len(xs) > 14 else 0)
    ax.set_yticks(range(len(ys)), [table.short(v) for v in ys])
    ax.set_xlabel(label(x) + (" (one column per value, unevenly spaced)" if uneven(xs) else ""))
    ax.set_ylabel(label(y) + " (one row per value)")


def uneven(values) -> bool:
    """Numeric grid values whose steps differ (a refined axis, a geometric one): drawn as equal
    columns, so the figure says so."""
    try:
        steps = np.diff(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        return False
    return len(steps) > 1 and not np.allclose(steps, steps[0], rtol=1e-6)


def pizza_clock(bound) -> tuple[str, dict]:
    """Which boundary a figure draws for one row of boundary.estimate, and that boundary's
    (boundary, lo, hi, status, runs_per_cell): the Pizza -> Clock one among Pizza and Clock runs
    when the table has it, else the Pizza share's crossing."""
    if "against_boundary" in bound and isinstance(bound.get("against"), str):
        keys = {k: bound[f"against_{k}"] for k in ("boundary", "lo", "hi", "status")}
        return f"Pizza -> {bound['against'].capitalize()}", keys | {"runs_per_cell": bound["against_runs"]}
    return "Pizza share = 1/2", {k: bound[k] for k in ("boundary", "lo", "hi", "status", "runs_per_cell")}


def _draw_boundary(ax, bounds: pd.DataFrame, y: str, ys: np.ndarray, xs: np.ndarray):
    """The Pizza -> Clock boundary of every row (among Pizza and Clock runs), with its interval
    as a horizontal bar; where the Pizza share of all runs falls below 1/2 to a class other than
    Clock (unlearned, non-circular, ...), that crossing as a grey cross, the class named."""
    handles = []
    chosen = [(np.searchsorted(ys, r[y]), *pizza_clock(r)) for _, r in bounds.iterrows()]
    points = [(i, name, b) for i, name, b in chosen if b["status"] == "crossing"]
    if points:
        rows = np.array([i for i, _, _ in points], dtype=float)
        centre = np.array([grid_position(xs, b["boundary"]) for _, _, b in points])
        problems = [interval_problem(b) for _, _, b in points]
        lo = np.array([c if bad else grid_position(xs, b["lo"]) for (_, _, b), c, bad in zip(points, centre, problems)])
        hi = np.array([c if bad else grid_position(xs, b["hi"]) for (_, _, b), c, bad in zip(points, centre, problems)])
        if not any(problems):
            bars = "(bars: 95% CI)"
        elif all(problems) and len(set(problems)) == 1:  # one reason for every row
            bars = f"no bars: {problems[0][0]}\n({problems[0][1]})"
        elif all(problems):
            bars = "no bars: 95% CI not estimable"
        else:
            bars = "(bars: 95% CI where estimable)"
        among = "\n(among Pizza and Clock runs)" if points[0][1].startswith("Pizza ->") else ""
        handles.append(ax.errorbar(centre, rows, xerr=[centre - lo, hi - centre], fmt="D-", color="black",
                                   mfc="white", ms=6, lw=1.5, capsize=4, label=f"{points[0][1]}{among}\n{bars}"))
    if "replaced_by" in bounds:
        other = bounds[(bounds["status"] == "crossing") & bounds["replaced_by"].notna()
                       & (bounds["replaced_by"] != bounds.get("against", "clock"))]
        if len(other):
            classes = ", ".join(sorted(set(other["replaced_by"])))
            handles.append(ax.scatter([grid_position(xs, b) for b in other["boundary"]],
                                      np.searchsorted(ys, other[y]), marker="X", s=60, color="#555555",
                                      edgecolor="white", zorder=5,
                                      label=f"Pizza share of all runs < 1/2,\ntaken over by {classes}"))
    return handles


MAX_BAR_LABELS = 24  # a 1-D diagram labels every bar up to this many (the p = 59 study: 13)
FRAGILE_STYLE = dict(facecolor="none", edgecolor="black", linestyle="--", lw=1.6, zorder=4)


def fragile_handle(n_fragile: int, n_cells: int) -> Patch:
    """The legend entry of the dashed outlines: how many cells rounding could decide."""
    return Patch(**FRAGILE_STYLE, label=f"dashed: fragile, rounding could decide\nthe majority ({n_fragile} of "
                 f"{n_cells} cells,\nreport --stability)")


def phase_shares(cells, x, xs, y, y_value, bound, note, label_column: str = "algorithm",
                 fragile: pd.DataFrame | None = None) -> Figure:
    """1-D diagram: the share of each algorithm (learning phase) along x as stacked bars, with
    the boundary (bound None: none).

    One bar per x value at 0, 1, 2, ... (as the cells of the 2-D diagram), labelled with its
    value: the axis spans the swept values only (no bar reaches below the smallest or above the
    largest, no tick outside them). The boundary sits between cell centres by linear
    interpolation (grid_position), as boundary.estimate interpolates between them."""
    fig = Figure(figsize=(max(5.5, 0.32 * len(xs) + 3.5), 3.6))
    ax = fig.subplots()
    positions = np.arange(len(xs))
    bottom = np.zeros(len(xs))
    cells = cells.set_index(x).loc[xs]
    # Pizza at the bottom: its bar height is the Pizza share, read against the 1/2 line.
    palette = CLASS_COLORS[label_column]
    for name in sorted(palette, key=lambda a: a != "pizza"):
        share = (cells[name] / cells["n"]).to_numpy()
        if share.any():
            ax.bar(positions, share, width=0.85, bottom=bottom, color=palette[name], label=name,
                   edgecolor="white", linewidth=0.5)
        bottom += share
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    extra = []  # legend entries without a drawing
    if fragile is not None:
        for value in fragile[x]:
            ax.add_patch(Rectangle((np.searchsorted(xs, value) - 0.46, 0.004), 0.92, 0.992, **FRAGILE_STYLE))
        extra.append(fragile_handle(len(fragile), len(xs)))
    name, chosen = pizza_clock(bound) if bound is not None else ("", {"status": "none"})
    if chosen["status"] == "crossing":
        problem = interval_problem(chosen)
        if problem is None:
            ax.axvspan(grid_position(xs, chosen["lo"]), grid_position(xs, chosen["hi"]),
                       facecolor="none", edgecolor="black", hatch="///", lw=0, alpha=0.6,
                       label="95% CI", zorder=3)
        ax.axvline(grid_position(xs, chosen["boundary"]), color="black", lw=2, zorder=4,
                   label=f"{name} at {chosen['boundary']:.3g}")
        if problem is not None:  # said in the legend instead of an interval
            extra.append(Patch(facecolor="none", edgecolor="none", label="{}\n({})".format(*problem)))
    ax.set_xlim(-0.5 - 0.05, len(xs) - 0.5 + 0.05)  # the bars and a small margin
    # every bar its label (rotated past 12); only a long axis is thinned, evenly
    shown = np.unique(np.linspace(0, len(xs) - 1, min(len(xs), MAX_BAR_LABELS)).round().astype(int))
    ax.set_xticks(shown, [table.short(xs[i]) for i in shown], rotation=45 if len(xs) > 12 else 0)
    ax.set_ylim(0, 1)
    ax.set_xlabel(label(x) + (" (one bar per value)" if len(xs) > 1 else ""))
    ax.set_ylabel("share of runs")
    n = cells["n"]
    runs = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    ax.set_title(f"{label(label_column).capitalize()} share per {label(x)} ({y} = {table.short(y_value)}, {runs} runs "
                 f"per bar){note}", loc="left")
    ax.legend(handles=ax.get_legend_handles_labels()[0] + extra, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


NO_LEARNED_RUN = "no learned run (every run unlearned or diverged)"


def _unlearned_only(counts: pd.DataFrame) -> pd.Series:
    """Cells (rows of table.cells) where no run learned: their metric medians mean nothing."""
    return counts["unlearned"] + counts["diverged"] == counts["n"]


def metric_heatmaps(frame: pd.DataFrame, x: str, y: str, pooled: list[str]) -> Figure:
    cells = table.cells(frame, x, y)
    xs = np.sort(cells[x].unique())
    ys = np.sort(cells[y].unique())
    note = pooled_note(pooled, frame)
    metrics = ("grad_sym", "dist_irr")
    if len(ys) == 1:  # 1-D: median and the spread over runs along x
        fig = Figure(figsize=(6.0, 3.4))
        ax = fig.subplots()
        empty = cells.loc[_unlearned_only(cells), x].to_numpy()
        for metric, color in zip(metrics, ("#56B4E9", "#D55E00")):
            q = frame.groupby(x)[metric].quantile([0.25, 0.5, 0.75]).unstack()
            q.loc[q.index.isin(empty)] = np.nan  # a gap where no run learned
            ax.plot(q.index, q[0.5], "o-", color=color, label=f"median {label(metric)}")
            ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.25, lw=0)
        half = 0.5 * (np.min(np.diff(xs)) if len(xs) > 1 else 1.0)
        for k, value in enumerate(empty):
            ax.axvspan(value - half, value + half, facecolor="none", edgecolor="#999999",
                       hatch="///", lw=0, label=NO_LEARNED_RUN if k == 0 else None)
        if len(empty):
            ax.set_xlim(xs[0] - 0.05 * (xs[-1] - xs[0] or 1), xs[-1] + 0.05 * (xs[-1] - xs[0] or 1))
        ax.set_xlabel(label(x))
        ax.set_ylabel("metric value (band: 25-75%)")
        ax.set_ylim(0, 1.05)
        ax.legend(frameon=False)
        ax.set_title(f"Median metrics per {label(x)}{note}", loc="left")
        return fig
    fig = Figure(figsize=(2 * max(4.0, 0.55 * len(xs) + 1.8), max(3.2, 0.45 * len(ys) + 1.8)),
                 layout="constrained")
    empty = [(np.searchsorted(ys, r[y]), np.searchsorted(xs, r[x]))
             for _, r in cells[_unlearned_only(cells)].iterrows()]
    for ax, metric in zip(fig.subplots(1, 2), metrics):
        values = np.full((len(ys), len(xs)), np.nan)
        for _, r in cells.iterrows():
            values[np.searchsorted(ys, r[y]), np.searchsorted(xs, r[x])] = r[f"median_{metric}"]
        for i, j in empty:  # masked: hatched, no number
            values[i, j] = np.nan
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#F2F2F2",
                                   edgecolor="#999999", hatch="///", lw=0, zorder=2))
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1,
                          origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 else "black")
        _grid_ticks(ax, x, xs, y, ys)
        ax.set_title(f"median {label(metric)}", loc="left")
        fig.colorbar(image, ax=ax, shrink=0.9)
    notes = ([f"hatched: {NO_LEARNED_RUN}"] if empty else []) + ([note[2:]] if note else [])
    if notes:
        fig.suptitle("; ".join(notes), fontsize=9)
    return fig


def paper_scatter(frame: pd.DataFrame, x: str, y: str, circular_only: bool) -> Figure:
    """The paper's views, coloured by gradient symmetricity: x vs DI, and x vs y."""
    shown = frame[frame["circularity"] >= CIRCULAR_MIN] if circular_only else frame
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = colormaps["viridis"]
    failed = shown["algorithm"].isin(["unlearned", "diverged"])  # their metrics mean little
    # In the x-y view the seeds of a grid cell would hide each other: spread them sideways.
    cell = shown.groupby([x, y], dropna=False)
    span = float(np.ptp(shown[x])) if len(shown) else 0.0
    spread = (cell.cumcount() - (cell[x].transform("size") - 1) / 2) * 0.012 * (span or 1.0)
    # The paper's figures are drawn from its run tables' DI: the largest wrong logit's.
    di = "dist_irr_top_wrong" if "dist_irr_top_wrong" in shown else "dist_irr"  # older tables
    for ax, (vertical, log, offset) in zip(axes, ((di, False, 0.0), (y, y in LOG_AXES, spread))):
        horizontal = shown[x] + offset
        points = ax.scatter(horizontal[~failed], shown.loc[~failed, vertical],
                            c=shown.loc[~failed, "grad_sym"], cmap=cmap, vmin=0, vmax=1, s=28,
                            edgecolors="black", linewidths=0.3)
        if failed.any():
            ax.scatter(horizontal[failed], shown.loc[failed, vertical], marker="x", s=22,
                       color="#999999", label="unlearned / diverged")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(vertical))
        if log:
            ax.set_yscale("log", base=2)
            ax.set_yticks(np.sort(shown[vertical].unique()))  # the values swept, no others
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter("{x:g}")
        ax.grid(alpha=0.3)
    if failed.any():
        axes[0].legend(frameon=False, loc="best")
    axes[1].set_xlabel(label(x) + (" (seeds of a cell side by side)" if len(shown) > cell.ngroups else ""))
    fig.colorbar(points, ax=axes, label=label("grad_sym"), shrink=0.9)
    which = (f"circular models only (circularity >= {CIRCULAR_MIN}): {len(shown)} of {len(frame)} runs"
             if circular_only else f"all {len(frame)} runs")
    fig.suptitle(f"Runs coloured by gradient symmetricity; {which}", fontsize=10)
    return fig


def metric_distributions(frame: pd.DataFrame, x: str, thresholds: dict) -> Figure:
    """Where the runs sit against the classification thresholds: histograms of grad_sym,
    dist_irr and circularity stacked by x (e.g. attention rate), the thresholds as lines, and
    grad_sym against dist_irr coloured by circularity (docs/metrics.md, calibration)."""
    fig = Figure(figsize=(16.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    shown = frame[~frame["algorithm"].isin(["unlearned", "diverged"])]
    values = np.sort(frame[x].unique())  # every x value, learned runs or not: one colour each
    cmap = colormaps["viridis"]
    lines = {"grad_sym": [("pizza_min_grad_sym", "pizza >="), ("clock_max_grad_sym", "clock <=")],
             "dist_irr": [("pizza_max_dist_irr", "pizza <="), ("clock_min_dist_irr", "clock >=")],
             "circularity": [("min_circularity", "circular >=")]}
    for ax, (metric, marks) in zip(axes, lines.items()):
        stacks = [shown.loc[shown[x] == v, metric].dropna() for v in values]
        ax.hist(stacks, bins=np.linspace(0, 1, 41), stacked=True,
                color=[cmap(i / max(len(values) - 1, 1)) for i in range(len(values))],
                label=[f"{label(x)} {v:g}" for v in values])
        for (key, text), style in zip(marks, ("--", ":")):
            if key in thresholds:
                ax.axvline(thresholds[key], color="black", ls=style, lw=1.2,
                           label=f"{text} {thresholds[key]:g}")
        ax.set_xlabel(label(metric))
        ax.set_ylabel("runs")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # runs are counted, not measured
        ax.legend(fontsize=9, frameon=False, loc="upper left")
    ax = axes[3]
    points = ax.scatter(shown["grad_sym"], shown["dist_irr"], c=shown["circularity"], cmap=cmap,
                        vmin=0.5, vmax=1, s=22, edgecolors="black", linewidths=0.3)
    for key, along in (("pizza_min_grad_sym", "x"), ("clock_max_grad_sym", "x"),
                       ("pizza_max_dist_irr", "y"), ("clock_min_dist_irr", "y")):
        if key in thresholds:
            (ax.axvline if along == "x" else ax.axhline)(thresholds[key], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(label("grad_sym"))
    ax.set_ylabel(label("dist_irr"))
    fig.colorbar(points, ax=ax, label="circularity", shrink=0.9)
    fig.suptitle(f"Metrics of the {len(shown)} learned runs against the classification thresholds "
                 f"(of {len(frame)} runs)", fontsize=10)
    return fig



def circle_shares(frame: pd.DataFrame, x: str, y: str, pooled: list[str]) -> Figure:
    """Per cell: the share of Pizza, Clock and unclear circles among all the cell's circles, and
    the share of mixed models (Pizza and Clock circles in one model)."""
    kinds = [("pizza", COLORS["pizza"]), ("clock", COLORS["clock"]), ("unclear", "#BBBBBB")]
    ys = np.sort(frame[y].unique())
    fig = Figure(figsize=(6.5, 2.6 * len(ys) + 0.8), layout="constrained")
    for ax, y_value in zip(fig.subplots(len(ys), 1, squeeze=False)[:, 0], ys):
        rows = frame[frame[y] == y_value]
        xs = np.sort(rows[x].unique())
        counts = {kind: [] for kind, _ in kinds}
        mixed = []
        for x_value in xs:
            cell = rows[rows[x] == x_value]
            labels = [lab for labs in cell["circle_algorithms"] for lab in labs]
            for kind, _ in kinds:
                counts[kind].append(labels.count(kind) / max(len(labels), 1))
            mixed.append((cell["algorithm"] == "mixed").mean())
        positions = np.arange(len(xs))
        bottom = np.zeros(len(xs))
        for kind, colour in kinds:
            ax.bar(positions, counts[kind], bottom=bottom, color=colour, label=f"{kind} circles",
                   edgecolor="white", lw=0.5)
            bottom += np.asarray(counts[kind])
        ax.plot(positions, mixed, "D-", color=COLORS["mixed"], label="mixed models")
        ax.set_xticks(positions, [f"{v:g}" for v in xs], rotation=90 if len(xs) > 10 else 0)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("share")
        ax.set_title(f"{label(y)} = {y_value:g}{pooled_note(pooled, frame)}", loc="left", fontsize=9)
    ax.set_xlabel(label(x))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    fig.suptitle("Circles per cell: what each isolated circle runs", fontsize=10)
    return fig



# ---------------------------------------------------------------- learning phases

def phase_split(frame: pd.DataFrame) -> str | None:
    """The axis the joint figure draws one panel per value of: the attention rate, which decides
    Clock or Pizza, when it was swept with a few values (pooled otherwise)."""
    swept = table.swept_axes(frame)
    return "attn_rate" if "attn_rate" in swept and frame["attn_rate"].nunique() <= 4 else None


def phase_algorithm(frame: pd.DataFrame, pooled: list[str]) -> Figure:
    """Learning phase x algorithm: how many runs of each phase learned each algorithm (one
    panel per attention rate when it was swept with a few values); shade and % = the share of
    the phase's runs, so 'do grokked models learn Clock more often' is read along a row."""
    split = phase_split(frame)
    groups = list(frame.groupby(split, sort=True)) if split else [(None, frame)]
    algorithms = [a for a in ALGORITHMS if (frame["algorithm"] == a).any()]
    phases = [p for p in LEARNING_PHASES if (frame["learning_phase"] == p).any()]
    fig = Figure(figsize=(max(4.5, 0.9 * len(algorithms) + 2.2) * len(groups), 0.5 * len(phases) + 2.0),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    for ax, (value, group) in zip(axes, groups):
        counts = table.joint_counts(group).reindex(index=phases, columns=algorithms, fill_value=0)
        totals = counts.sum(axis=1).replace(0, np.nan)
        share = counts.div(totals, axis=0).to_numpy(dtype=float)
        ax.imshow(np.nan_to_num(share), cmap="Greys", vmin=0, vmax=1.4, aspect="auto")
        for (i, j), n in np.ndenumerate(counts.to_numpy()):
            if n:
                ax.text(j, i, f"{n}\n{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.8 else "black")
        ax.set_xticks(range(len(algorithms)), algorithms, rotation=30, ha="right")
        ax.set_yticks(range(len(phases)), [f"{p} ({int(counts.loc[p].sum())})" for p in phases])
        for tick, name in zip(ax.get_xticklabels(), algorithms):
            tick.set_color(COLORS[name] if name not in ("unlearned",) else "#666666")
        ax.set_xlabel("algorithm")
        ax.set_title(f"{label(split)} = {table.short(value)}" if split else "all runs", loc="left")
    axes[0].set_ylabel("learning phase (runs)")
    note = pooled_note([a for a in pooled if a != split], frame)
    fig.suptitle(f"Learning phase x algorithm: runs, and % of the phase's runs{note}", fontsize=10)
    return fig


def dynamics_heatmaps(frame: pd.DataFrame, x: str, y: str, pooled: list[str]) -> Figure:
    """Per cell: the median memorize_step and generalize_step (over the runs that reached them)
    and the median generalization_delay, the numbers the learning phase is read from."""
    cells = table.cells(frame, x, y, "learning_phase")
    xs = np.sort(cells[x].unique())
    ys = np.sort(cells[y].unique())
    metrics = ("memorize_step", "generalize_step", "generalization_delay")
    fig = Figure(figsize=(3 * max(3.6, 0.5 * len(xs) + 1.8), max(3.0, 0.45 * len(ys) + 1.8)),
                 layout="constrained")
    for ax, metric in zip(fig.subplots(1, 3), metrics):
        values = np.full((len(ys), len(xs)), np.nan)
        for _, r in cells.iterrows():
            values[np.searchsorted(ys, r[y]), np.searchsorted(xs, r[x])] = r[f"median_{metric}"]
        finite = values[np.isfinite(values)]
        image = ax.imshow(np.ma.masked_invalid(values), cmap="magma_r", origin="lower", aspect="auto",
                          vmin=0, vmax=finite.max() if finite.size else 1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.0f}" if np.isfinite(v) else "never", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and finite.size and v > 0.6 * finite.max() else "black")
        _grid_ticks(ax, x, xs, y, ys)
        ax.set_title(f"median {metric}" + (" (steps)" if metric.endswith("step") else ""), loc="left")
        fig.colorbar(image, ax=ax, shrink=0.9)
    note = pooled_note(pooled, frame)
    fig.suptitle("Learning dynamics per cell (never: no run of the cell reached it)" + note, fontsize=9)
    return fig


def boundary_over_p(points: pd.DataFrame) -> Figure:
    """The p ladder's answer: the Pizza -> Clock boundary against p (log scale), one line per
    series (reports.paper.ladder_points: d = 128, and d/p near the paper's), with its 95% interval;
    left by phasescan's labels, right by grad_sym alone. A (p, d) with no crossing is an open
    triangle at the rate its boundary lies beyond: up at its largest rate ('above': Pizza
    throughout), down at its smallest ('below': Clock from there on)."""
    fig = Figure(figsize=(9.0, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    ps = np.sort(points["p"].unique())
    rules = [("phasescan's labels", "pizza -> clock", "95% lo", "95% hi", "status"),
             ("grad_sym alone", "by grad_sym alone", "gs 95% lo", "gs 95% hi", "gs status")]
    for ax, (title, at, lo, hi, status) in zip(axes, rules):
        for (name, group), color, shift in zip(points.groupby("series", sort=False), OKABE_ITO[4:], (0.985, 1.015)):
            group = group.sort_values("p")
            crossing = group[group[status] == "crossing"]
            x = crossing["p"] * shift  # side by side where the two series share a p
            ax.errorbar(x, crossing[at], yerr=[crossing[at] - crossing[lo], crossing[hi] - crossing[at]],
                        color=color, marker="o", capsize=3, label=name)
            for side, at_rate, marker in (("above", "highest rate", "^"), ("below", "lowest rate", "v")):
                beyond = group[group[status] == side]
                ax.plot(beyond["p"] * shift, beyond[at_rate], marker, mfc="none", color=color)
        ax.set_xscale("log")
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("p")
        ax.set_title(f"by {title}", loc="left", fontsize=10)
    axes[0].set_ylabel("Pizza -> Clock boundary (attention rate)")
    axes[0].set_ylim(0, 1.05)
    axes[1].legend(frameon=False, loc="lower right")
    fig.suptitle("Does the boundary follow p, d or d/p? (bars: 95% bootstrap over seeds; "
                 "open triangle: no crossing, the boundary beyond the rates swept)", fontsize=10, y=1.03)
    return fig
