"""`python -m phasescan.plot RESULTS_DIR [x=attn_rate] [y=d_model] [--formats png,pdf,svg]
[--runs ID,ID] [--circular-only] [--no-inspect]`: draw a sweep's figures into RESULTS_DIR/figures/.

Figures (one file per figure and format):
  phase_diagram     each (y, x) cell coloured by its majority algorithm, with `k/n` (runs with it
                    / runs); the Pizza -> Clock boundary (boundary.estimate) and its 95% bootstrap
                    interval drawn on it (below MIN_CI_RUNS runs per cell the legend says n is too
                    small instead). With one y value: the share of each algorithm along x.
  metric_heatmaps   median gradient symmetricity and distance irrelevance per cell; cells where
                    no run learned are hatched, without a number.
  paper_scatter     the paper's views: x vs distance irrelevance, and x vs y, coloured by
                    gradient symmetricity (`--circular-only`: circularity >= 0.995 only).
  inspect_<run_id>  one model: its embedding on principal-component pairs (tokens labelled), the
                    gradient scatter (d logit_c / d E[a] vs d E[b] on the first PCs, y = x line),
                    and the correct-class logit over (a+b, a-b).
  boundary.csv      the boundary table (one row per y value).

Inspected runs: `--runs`, or automatically the most Clock-like and the most Pizza-like run. Their
weights come from RESULTS_DIR/weights/ when the sweep kept them (`save_weights=`), else the one
model is trained again from its row (a compilation: seconds to minutes). At the end of a sweep
(`plot=true`) only runs with saved weights are inspected, so the figures never retrain.
Axes other than x and y that the sweep varied are pooled; the titles say so, with their values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors
from matplotlib.figure import Figure  # object API: no pyplot state, no GUI backend needed
from matplotlib.patches import Patch, Rectangle

from . import boundary, grid, results, retrain, table, weights
from .classify import ALGORITHMS
from .config import ConfigError
from .style import COLORS, LOG_AXES, STYLE, label, pooled_values

FIGURES = "figures"
BOUNDARY_CSV = "boundary.csv"
CIRCULAR_MIN = 0.995  # the paper keeps models with circularity >= 99.5% in its scatter plots

def save(fig: Figure, folder: Path, name: str, formats) -> list[Path]:
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        results.write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, bbox_inches="tight"))
        paths.append(path)
    return paths


def pooled_note(pooled: list[str], frame: pd.DataFrame) -> str:
    """A title's suffix naming the swept axes whose runs a figure puts together."""
    return "" if not pooled else f"; pooled over {pooled_values(frame, pooled)}"


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

def phase_diagram(frame: pd.DataFrame, x: str, y: str, pooled: list[str], bounds: pd.DataFrame) -> Figure:
    cells = table.cells(frame, x, y)
    xs = np.sort(cells[x].unique())
    ys = np.sort(cells[y].unique())
    note = pooled_note(pooled, frame)
    if len(ys) == 1:
        return phase_shares(cells, x, xs, y, ys[0], bounds.iloc[0], note)
    fig = Figure(figsize=(max(5.0, 0.62 * len(xs) + 2.6), max(3.2, 0.45 * len(ys) + 1.8)))
    ax = fig.subplots()
    image = np.ones((len(ys), len(xs), 3))  # white where a cell has no runs
    for _, r in cells.iterrows():
        i, j = np.searchsorted(ys, r[y]), np.searchsorted(xs, r[x])
        share = r["majority_count"] / r["n"]
        strength = 0.3 + 0.7 * share  # a weak majority is drawn paler
        image[i, j] = strength * np.array(colors.to_rgb(COLORS[r["majority"]])) + (1 - strength)
        ink = "white" if r["majority"] in ("clock", "diverged") and share > 0.7 else "black"
        ax.text(j, i, f"{r['majority_count']}/{r['n']}", ha="center", va="center", fontsize=8,
                color=ink)
    ax.imshow(image, origin="lower", aspect="auto")
    _grid_ticks(ax, x, xs, y, ys)
    handles = [Patch(color=COLORS[a], label=a) for a in ALGORITHMS if (cells["majority"] == a).any()]
    curve = _draw_boundary(ax, bounds, y, ys, xs)
    handles += [curve] if curve else []
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Majority algorithm per cell (k/n: runs with it / runs; paler: weaker "
                 f"majority){note}", loc="left")
    return fig


def _grid_ticks(ax, x, xs, y, ys):
    ax.set_xticks(range(len(xs)), [table.short(v) for v in xs], rotation=45 if len(xs) > 14 else 0)
    ax.set_yticks(range(len(ys)), [table.short(v) for v in ys])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y) + " (one row per value)")


def _draw_boundary(ax, bounds: pd.DataFrame, y: str, ys: np.ndarray, xs: np.ndarray):
    """The Pizza share = 1/2 crossing of every row, with its interval as a horizontal bar."""
    points = [(np.searchsorted(ys, r[y]), r) for _, r in bounds.iterrows() if r["status"] == "crossing"]
    if not points:
        return None
    rows = np.array([i for i, _ in points], dtype=float)
    centre = np.array([grid_position(xs, r["boundary"]) for _, r in points])
    problems = [interval_problem(r) for _, r in points]
    lo = np.array([c if bad else grid_position(xs, r["lo"])
                   for (_, r), c, bad in zip(points, centre, problems)])
    hi = np.array([c if bad else grid_position(xs, r["hi"])
                   for (_, r), c, bad in zip(points, centre, problems)])
    if not any(problems):
        bars = "(bars: 95% CI)"
    elif all(problems) and len(set(problems)) == 1:  # one reason for every row
        bars = f"no bars: {problems[0][0]}\n({problems[0][1]})"
    elif all(problems):
        bars = "no bars: 95% CI not estimable"
    else:
        bars = "(bars: 95% CI where estimable)"
    return ax.errorbar(centre, rows, xerr=[centre - lo, hi - centre], fmt="D-", color="black",
                       mfc="white", ms=6, lw=1.5, capsize=4, label=f"Pizza share = 1/2\n{bars}")


def phase_shares(cells, x, xs, y, y_value, bound, note) -> Figure:
    """1-D diagram: the share of each algorithm along x as stacked bars, with the boundary.

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
    for name in sorted(ALGORITHMS, key=lambda a: a != "pizza"):
        share = (cells[name] / cells["n"]).to_numpy()
        if share.any():
            ax.bar(positions, share, width=0.85, bottom=bottom, color=COLORS[name], label=name,
                   edgecolor="white", linewidth=0.5)
        bottom += share
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    extra = []  # legend entries without a drawing
    if bound["status"] == "crossing":
        problem = interval_problem(bound)
        if problem is None:
            ax.axvspan(grid_position(xs, bound["lo"]), grid_position(xs, bound["hi"]),
                       facecolor="none", edgecolor="black", hatch="///", lw=0, alpha=0.6,
                       label="95% CI", zorder=3)
        ax.axvline(grid_position(xs, bound["boundary"]), color="black", lw=2, zorder=4,
                   label=f"Pizza share = 1/2 at {bound['boundary']:.3g}")
        if problem is not None:  # said in the legend instead of an interval
            extra.append(Patch(facecolor="none", edgecolor="none", label="{}\n({})".format(*problem)))
    ax.set_xlim(-0.5 - 0.05, len(xs) - 0.5 + 0.05)  # the bars and a small margin
    shown = np.unique(np.linspace(0, len(xs) - 1, min(len(xs), 12)).round().astype(int))
    ax.set_xticks(shown, [table.short(xs[i]) for i in shown], rotation=45 if len(xs) > 12 else 0)
    ax.set_ylim(0, 1)
    ax.set_xlabel(label(x) + (" (one bar per value)" if len(xs) > 1 else ""))
    ax.set_ylabel("share of runs")
    n = cells["n"]
    runs = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    ax.set_title(f"Algorithm share per {label(x)} ({y} = {table.short(y_value)}, {runs} runs "
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
        ax.legend(fontsize=6.5, frameon=False, loc="upper left")
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


# ---------------------------------------------------------------- inspection of single models

def pick_runs(frame: pd.DataFrame, saved_only: bool, out_dir: Path) -> list[str]:
    """The most Clock-like (largest dist_irr - grad_sym) and the most Pizza-like (largest
    grad_sym - dist_irr) learned run; with `saved_only`, among runs whose weights were kept."""
    pool = frame[~frame["algorithm"].isin(["unlearned", "diverged"])]
    if saved_only:
        pool = pool[[weights.path_of(out_dir, r).is_file() for r in pool["run_id"]]]
    if pool.empty:
        return []
    score = pool["dist_irr"] - pool["grad_sym"]
    picks = [pool.loc[score.idxmax(), "run_id"], pool.loc[score.idxmin(), "run_id"]]
    return list(dict.fromkeys(picks))


def logit_surface(correct: np.ndarray, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """The correct-class logit over (a - b centred on 0, rows; a + b mod p, columns)."""
    surface = np.full((p, p), np.nan)
    surface[(a - b + p // 2) % p, (a + b) % p] = correct
    return surface


def inspection_data(arrays: dict, run: dict, metric_opts: dict, circle_freqs=()) -> dict:
    """Everything the inspection figures draw, computed with the model's own Net; for each of
    `circle_freqs`, the isolated circle (metrics.circle_logits)."""
    import jax
    import jax.numpy as jnp

    from . import data, metrics
    from .train import Spec, build_net

    p, spec = run["p"], Spec.from_run(run)
    dataset = data.Dataset(p, spec.op, spec.input_format)
    net = build_net(spec, dataset, jnp.float32(run["attn_rate"]))
    params = jax.tree_util.tree_map(jnp.asarray, weights.to_params(arrays))
    rows = np.asarray(net.number_rows(params), np.float64)
    centred = rows - rows.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = vt[:4]
    triples = jnp.asarray(metrics.grad_sym_triples(p, metric_opts["grad_sym_triples"],
                                                   metric_opts["triples_seed"]))
    vectors = net.token_vectors(params, dataset.tokens_of(triples[:, 0], triples[:, 1]))
    grad = jax.jit(jax.vmap(lambda v, c: jax.grad(lambda u: net.logits_from_vectors(params, u)[c])(v)))
    g = np.asarray(grad(vectors, triples[:, 2]), np.float64)  # (n, 2, d)
    logits = np.asarray(jax.jit(net.logits)(params, dataset.tokens))
    labels = np.asarray(dataset.labels)
    a, b = np.asarray(dataset.a), np.asarray(dataset.b)
    half = p // 2
    surface = logit_surface(logits[np.arange(p * p), labels], a, b, p)
    scores = centred @ pcs.T
    circles = []
    for k in circle_freqs:  # the circle's tokens on its own plane, and its logits alone
        on_circle = np.asarray(metrics.circle_rows(jnp.asarray(rows, jnp.float32), float(k)), np.float64)
        plane = np.linalg.svd(on_circle - on_circle.mean(axis=0), full_matrices=False)[2][:2]
        isolated = np.asarray(jax.jit(lambda k: metrics.circle_logits(net, params, dataset, k))(float(k)))
        circles.append({"k": int(k), "points": (on_circle - on_circle.mean(axis=0)) @ plane.T,
                        "surface": logit_surface(isolated[np.arange(p * p), labels], a, b, p)})
    return {"scores": scores, "var_share": s[:4] ** 2 / np.sum(s ** 2),
            "pair_freqs": [pair_frequency(scores[:, 0:2]), pair_frequency(scores[:, 2:4])],
            "grad_a": g[:, 0] @ pcs[:2].T, "grad_b": g[:, 1] @ pcs[:2].T, "surface": surface,
            "diff_range": (-half, p - 1 - half), "circles": circles}


def pair_frequency(scores: np.ndarray) -> int:
    """The frequency k (1..p//2) holding most of the Fourier energy of a pair of PC scores (p, 2):
    on a circle of frequency k token t sits at angle 2 pi k t / p."""
    power = np.sum(np.abs(np.fft.rfft(scores, axis=0)[1:]) ** 2, axis=1)
    return int(np.argmax(power)) + 1


def inspection(row: pd.Series, d: dict) -> Figure:
    p = int(row["p"])
    fig = Figure(figsize=(10.5, 8.4), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    cyclic = colormaps["twilight"]
    for ax, (i, j), k in zip((ax1, ax2), ((0, 1), (2, 3)), d["pair_freqs"]):
        u, v = d["scores"][:, i], d["scores"][:, j]
        # Coloured by the angle a frequency-k circle gives each token: neighbours share a hue.
        ax.scatter(u, v, c=(k * np.arange(p)) % p, cmap=cyclic, vmin=0, vmax=p, s=40,
                   edgecolors="black", linewidths=0.4)
        for t in range(p):
            ax.annotate(str(t), (u[t], v[t]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xlabel(f"PC{i + 1} ({100 * d['var_share'][i]:.0f}% of variance)")
        ax.set_ylabel(f"PC{j + 1} ({100 * d['var_share'][j]:.0f}% of variance)")
        ax.set_title(f"Embedding, tokens 0..{p - 1} (colour: {k}t mod p, k = {k})", loc="left")
        ax.set_aspect("equal", adjustable="datalim")
    ga, gb = d["grad_a"], d["grad_b"]
    for k, (color, marker) in enumerate((("#0072B2", "o"), ("#E69F00", "s"))):
        ax3.scatter(ga[:, k], gb[:, k], s=14, color=color, marker=marker, alpha=0.7,
                    label=f"projection on PC{k + 1}")
    span = np.nanmax(np.abs(np.concatenate([ga.ravel(), gb.ravel()]))) * 1.05 or 1.0
    ax3.plot([-span, span], [-span, span], color="black", lw=1, ls="--", label="y = x")
    ax3.set_xlim(-span, span)
    ax3.set_ylim(-span, span)
    ax3.set_aspect("equal")
    ax3.set_xlabel("d logit_c / d E[a]  (projected)")
    ax3.set_ylabel("d logit_c / d E[b]  (projected)")
    ax3.set_title(f"Input gradients, {len(ga)} triples (Pizza: on y = x)", loc="left")
    ax3.legend(loc="upper left", framealpha=0.9)
    lo, hi = d["diff_range"]
    image = ax4.imshow(d["surface"], origin="lower", aspect="auto", cmap="viridis",
                       extent=(-0.5, p - 0.5, lo - 0.5, hi + 0.5))
    ax4.set_xlabel("a + b (mod p)")
    ax4.set_ylabel("a - b (mod p, centred)")
    ax4.set_title("Correct-class logit (Clock: flat in a - b)", loc="left")
    fig.colorbar(image, ax=ax4, label="logit of c = a + b")
    fig.suptitle(f"run {row['run_id']}: {row['algorithm']}  |  attention rate {row['attn_rate']:.3g}, "
                 f"d_model {row['d_model']}, p {p}, seed {row['seed']}  |  grad_sym "
                 f"{row['grad_sym']:.2f}, dist_irr {row['dist_irr']:.2f}, circularity "
                 f"{row['circularity']:.2f}", fontsize=10)
    return fig


def circles_figure(row: pd.Series, d: dict) -> Figure:
    """One column per isolated circle: its tokens on the circle, coloured by the angle k t mod p
    (a clean circle is a ring in that order), and the correct-class logit of the network run on
    it alone over (a + b, a - b) (Clock: flat in a - b; Pizza: bands in a - b), with its FVEs."""
    p, circles = int(row["p"]), d["circles"]
    fig = Figure(figsize=(3.6 * max(len(circles), 1), 6.6), layout="constrained")
    axes = fig.subplots(2, max(len(circles), 1), squeeze=False)
    lo, hi = d["diff_range"]
    for j, circle in enumerate(circles):
        k, top, bottom = circle["k"], axes[0, j], axes[1, j]
        label = list(row["circle_algorithms"])[j]
        clock, pizza = list(row["circle_clock_fve"])[j], list(row["circle_pizza_fve"])[j]
        u, v = circle["points"][:, 0], circle["points"][:, 1]
        top.scatter(u, v, c=(k * np.arange(p)) % p, cmap=colormaps["twilight"], vmin=0, vmax=p,
                    s=36, edgecolors="black", linewidths=0.4)
        for t in range(p):
            top.annotate(str(t), (u[t], v[t]), textcoords="offset points", xytext=(3, 2), fontsize=6)
        top.set_aspect("equal", adjustable="datalim")
        top.set_title(f"circle k = {k}: {label}", loc="left", color=COLORS.get(label, "black"))
        image = bottom.imshow(circle["surface"], origin="lower", aspect="auto", cmap="viridis",
                              extent=(-0.5, p - 0.5, lo - 0.5, hi + 0.5))
        bottom.set_title(f"isolated: Clock FVE {clock:.2f}, Pizza FVE {pizza:.2f}", loc="left",
                         fontsize=9)
        bottom.set_xlabel("a + b (mod p)")
        fig.colorbar(image, ax=bottom, shrink=0.8)
    axes[1, 0].set_ylabel("a - b (mod p, centred)")
    axes[0, 0].set_ylabel("the circle's own plane")
    fig.suptitle(f"run {row['run_id']}: {row['algorithm']}, attention rate {row['attn_rate']:.3g} "
                 f"-- each circle of the embedding alone (docs/metrics.md, circles)", fontsize=10)
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


# ---------------------------------------------------------------- entry points

def read_config(out_dir: Path) -> dict:
    """The sweep's resolved config (config.yaml), or the defaults when the folder has none."""
    from omegaconf import OmegaConf

    path = Path(out_dir) / results.CONFIG
    if path.is_file() and path.stat().st_size:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    from .config import compose
    return compose()


def sweep_figures(frame: pd.DataFrame, x: str, y: str, pooled: list[str], bounds: pd.DataFrame,
                  thresholds: dict, circular_only: bool = False):
    """(name, Figure) of every figure of the whole sweep (not the single-model ones), one at a
    time: `draw` saves them, `phasescan.report --html` embeds them."""
    yield "phase_diagram", phase_diagram(frame, x, y, pooled, bounds)
    yield "metric_heatmaps", metric_heatmaps(frame, x, y, pooled)
    yield "paper_scatter", paper_scatter(frame, x, y, circular_only)
    yield "metric_distributions", metric_distributions(frame, x, thresholds)
    if "circle_algorithms" in frame:  # tables from before the circles have none
        yield "circle_shares", circle_shares(frame, x, y, pooled)


def summary_figures(source, x: str = "attn_rate", y: str = "d_model") -> dict[str, Figure]:
    """phasescan.figures: the sweep figures in memory, {name: Figure}; source is a results folder
    or a runs table (its .attrs["out_dir"], when set, gives the classification thresholds)."""
    from matplotlib import rc_context

    from .config import compose
    frame = source if isinstance(source, pd.DataFrame) else results.load(source)
    folder = Path(source) if not isinstance(source, pd.DataFrame) else frame.attrs.get("out_dir")
    thresholds = (read_config(folder) if folder else compose()).get("classify", {})
    x, y, pooled = table.resolve_axes(frame, x, y)
    with rc_context(STYLE):
        return dict(sweep_figures(frame, x, y, pooled, boundary.estimate(frame, x, y), thresholds))


def draw(results_dir, x: str = "attn_rate", y: str = "d_model", formats=("png",),
         runs: list[str] | None = None, circular_only: bool = False,
         inspect: str = "auto") -> list[Path]:
    """Draw every figure of a results folder into results_dir/figures/; return the paths.

    `inspect`: "auto" (the chosen runs, retrained when their weights were not kept), "saved"
    (only runs with saved weights: never trains; what the end of a sweep uses) or "none".
    `runs` (run_ids) overrides the automatic choice.
    """
    from matplotlib import rc_context

    out_dir = Path(results_dir)
    frame = results.load(out_dir)
    x, y, pooled = table.resolve_axes(frame, x, y)
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise ConfigError(f"--formats {','.join(bad)}: allowed png, pdf, svg")
    unknown = [r for r in runs or [] if r not in set(frame["run_id"])]
    if unknown:
        raise ConfigError(f"--runs {','.join(unknown)}: no such run_id in {out_dir}")
    folder = out_dir / FIGURES
    folder.mkdir(parents=True, exist_ok=True)

    bounds = boundary.estimate(frame, x, y)
    results.write_atomic(folder / BOUNDARY_CSV, lambda tmp: bounds.to_csv(tmp, index=False))
    paths = [folder / BOUNDARY_CSV]
    with rc_context(STYLE):
        thresholds = read_config(out_dir).get("classify", {})
        for name, fig in sweep_figures(frame, x, y, pooled, bounds, thresholds, circular_only):
            paths += save(fig, folder, name, formats)
        if runs is None:
            runs = [] if inspect == "none" else pick_runs(frame, inspect == "saved", out_dir)
        metric_opts = read_config(out_dir)["metrics"] if runs else None
        rows = [frame.loc[frame["run_id"] == run_id].iloc[0] for run_id in runs]
        for row in [r for r in rows if r["diverged"]]:  # non-finite weights: nothing to draw
            print(f"phasescan: run {row['run_id']} diverged: no inspection figure", file=sys.stderr)
        rows = [r for r in rows if not r["diverged"]]
        chosen = [grid.run_from_row(row) for row in rows]
        for row, run, arrays in zip(rows, chosen, retrain.load_or_retrain(out_dir, chosen, metric_opts)):
            freqs = list(row["circle_freqs"]) if "circle_freqs" in row else []
            d = inspection_data(arrays, run, metric_opts, freqs)
            paths += save(inspection(row, d), folder, f"inspect_{row['run_id']}", formats)
            if freqs:
                paths += save(circles_figure(row, d), folder, f"circles_{row['run_id']}", formats)
    from . import plot_beyond  # the history and refinement figures, when the folder has them
    return paths + plot_beyond.draw(out_dir, folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", help="a phasescan results folder (holds runs.parquet)")
    parser.add_argument("axes", nargs="*", metavar="x=FIELD|y=FIELD",
                        help="the diagram's axes (default x=attn_rate y=d_model)")
    parser.add_argument("--formats", default="png", help="comma-separated: png,pdf,svg")
    parser.add_argument("--runs", help="comma-separated run_ids to inspect (default: the most "
                        "Clock-like and the most Pizza-like run)")
    parser.add_argument("--circular-only", action="store_true",
                        help=f"scatter views: only runs with circularity >= {CIRCULAR_MIN}")
    parser.add_argument("--no-inspect", action="store_true", help="no single-model figures")
    args = parser.parse_args(argv)
    chosen = {"x": "attn_rate", "y": "d_model"}
    try:
        for item in args.axes:
            key, _, value = item.partition("=")
            if key not in chosen or not value:
                raise ConfigError(f"{item}: expected x=FIELD or y=FIELD")
            chosen[key] = value
        paths = draw(args.results_dir, chosen["x"], chosen["y"], args.formats.split(","),
                     args.runs.split(",") if args.runs else None, args.circular_only,
                     "none" if args.no_inspect else "auto")
    except ConfigError as error:
        for problem in error.problems:
            print(f"phasescan.plot: {problem}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"phasescan.plot: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only folder, a full disk: one line, the results untouched
        print(f"phasescan.plot: cannot write {error.filename or args.results_dir}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("phasescan.plot: interrupted; the results are untouched", file=sys.stderr)
        return 130
    print(table.format_table(results.load(args.results_dir), chosen["x"], chosen["y"]))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
