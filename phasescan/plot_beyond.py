"""Figures of the two beyond-the-paper features: time-resolved phases and boundary refinement.

  draw_history(results_dir, figures_dir)     history_metrics.png: metrics over training for one
                                             run per attention rate; history_phases.png: the
                                             algorithm shares per attention rate at several steps;
                                             history_loss.png: every run's training loss (log
                                             scale), a panel per train.cross_entropy
  draw_refinement(results_dir, figures_dir)  refinement.png: the boundary's uncertain span per
                                             round, and where the refinement added models

`python -m phasescan.plot_beyond RESULTS_DIR [FIGURES_DIR]` draws whichever applies
(FIGURES_DIR defaults to RESULTS_DIR/figures). Colours: the Okabe-Ito colour-blind-safe palette.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import history, refine, results  # noqa: E402
from .classify import ALGORITHMS  # noqa: E402
from .style import COLORS, OKABE_ITO, pooled_values  # noqa: E402  (one colour per class in every figure)
from .table import swept_axes  # noqa: E402

HISTORY_PANELS = [("test_acc", "test accuracy"), ("grad_sym", "gradient symmetricity"),
                  ("dist_irr", "distance irrelevance"), ("circularity", "circularity")]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def chosen_runs(hist: pd.DataFrame, max_runs: int = 6) -> list[str]:
    """One run per attention rate (its lowest seed, first width), at most `max_runs`, evenly picked."""
    firsts = (hist.drop_duplicates("run_id").sort_values(["attn_rate", "d_model", "seed"])
              .drop_duplicates("attn_rate"))
    pick = np.unique(np.linspace(0, len(firsts) - 1, min(max_runs, len(firsts))).round().astype(int))
    return list(firsts["run_id"].iloc[pick])


def draw_history(results_dir, figures_dir) -> list[Path]:
    hist = history.load(results_dir)
    figures_dir = Path(figures_dir)
    ids = chosen_runs(hist)

    fig, axes = plt.subplots(1, len(HISTORY_PANELS), figsize=(4 * len(HISTORY_PANELS), 3.4))
    for colour, run_id in zip(OKABE_ITO, ids):
        run = hist[hist["run_id"] == run_id].sort_values("step")
        last = run.iloc[-1]
        label = f"attn {last['attn_rate']:g}, d {last['d_model']}, seed {last['seed']}: {last['algorithm']}"
        learned = run.loc[run["test_acc"] >= 0.9, "step"]
        for ax, (name, title) in zip(axes, HISTORY_PANELS):
            ax.plot(run["step"], run[name], color=colour, label=label)
            if len(learned):  # when the model generalises (test accuracy reaches 0.9)
                ax.axvline(learned.iloc[0], color=colour, ls=":", lw=1)
    for ax, (_, title) in zip(axes, HISTORY_PANELS):
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Metrics during training (dotted: test accuracy first >= 0.9)", y=1.04)
    paths = [_save(fig, figures_dir / "history_metrics.png")]

    steps = np.sort(hist["step"].unique())
    shown = steps[np.unique(np.linspace(0, len(steps) - 1, min(5, len(steps))).round().astype(int))]
    rates = np.sort(hist["attn_rate"].unique())
    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.2), sharey=True, squeeze=False)
    for ax, step in zip(axes[0], shown):
        counts = (hist[hist["step"] == step].groupby("attn_rate")["algorithm"].value_counts()
                  .unstack(fill_value=0).reindex(index=rates, columns=list(ALGORITHMS), fill_value=0))
        shares = counts.div(counts.sum(axis=1), axis=0)
        bottom = np.zeros(len(rates))
        positions = np.arange(len(rates))
        for name in ALGORITHMS:
            ax.bar(positions, shares[name], bottom=bottom, color=COLORS[name],
                   label=name, edgecolor="white", lw=0.5)
            bottom += shares[name].to_numpy()
        ax.set_xticks(positions, [f"{r:g}" for r in rates], rotation=90 if len(rates) > 8 else 0)
        ax.set_title(f"step {step}")
        ax.set_xlabel("attention rate")
    axes[0, 0].set_ylabel("share of runs")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[n]) for n in ALGORITHMS]
    fig.legend(handles, ALGORITHMS, loc="lower center", ncol=len(ALGORITHMS), fontsize=8,
               bbox_to_anchor=(0.5, -0.16))
    pooled = [a for a in swept_axes(hist) if a != "attn_rate"]
    pooled = f"; pooled over {pooled_values(hist, pooled)}" if pooled else ""
    fig.suptitle(f"Algorithm per attention rate during training (all runs of each rate{pooled})", y=1.04)
    paths.append(_save(fig, figures_dir / "history_phases.png"))
    paths.append(_save(loss_history(hist), figures_dir / "history_loss.png"))
    return paths


def loss_history(hist: pd.DataFrame):
    """Every run's training loss over the logged steps on a log axis, coloured by attention
    rate, one panel per train.cross_entropy: a model that spikes after it fit shows at a glance."""
    losses = sorted(hist["cross_entropy"].dropna().unique()) if "cross_entropy" in hist else [None]
    rates = np.sort(hist["attn_rate"].unique())
    colour = dict(zip(rates, (OKABE_ITO * len(rates))[:len(rates)]))
    fig, axes = plt.subplots(1, len(losses), figsize=(5.5 * len(losses), 3.6), sharey=True,
                             squeeze=False)
    for ax, loss in zip(axes[0], losses):
        shown = hist if loss is None else hist[hist["cross_entropy"] == loss]
        for run_id, run in shown.groupby("run_id"):
            run = run.sort_values("step")
            ax.plot(run["step"], run["train_loss"], color=colour[run["attn_rate"].iloc[0]], lw=1.2,
                    marker="o", ms=2.5)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"train.cross_entropy = {loss}" if loss else "training loss", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("training loss (logged steps)")
    handles = [plt.Line2D([], [], color=colour[r], lw=2) for r in rates]
    axes[0, -1].legend(handles, [f"attn {r:g}" for r in rates], fontsize=7, loc="upper right")
    fig.suptitle("Training loss of every run", y=1.02)
    return fig


def draw_refinement(results_dir, figures_dir) -> list[Path]:
    results_dir = Path(results_dir)
    table = pd.read_parquet(results_dir / refine.REFINEMENT)
    runs = results.load(results_dir)
    x, y = table["x_axis"].iloc[0], table["y_axis"].iloc[0] or None
    y_values = sorted(table[y].unique()) if y else [None]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    # Okabe-Ito colours the algorithms (right) do not use
    for k, (colour, y_value) in enumerate(zip(["#000000", "#D55E00", "#009E73", "#56B4E9", "#F0E442"], y_values)):
        rows = table if y is None else table[table[y] == y_value]
        offset = (k - (len(y_values) - 1) / 2) * 0.12
        left.errorbar(rows["boundary"], rows["round"] + offset,
                      xerr=[rows["boundary"] - rows["span_lo"], rows["span_hi"] - rows["boundary"]],
                      fmt="o", color=colour, capsize=3, label=f"{y} = {y_value}" if y else "boundary")
    left.set_xlabel(x.replace("_", " "))
    left.set_ylabel("refinement round")
    left.set_yticks(sorted(table["round"].unique()))
    left.invert_yaxis()
    left.set_title("boundary and its uncertain span per round")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    y_pos = {v: i for i, v in enumerate(y_values)}
    for name in ALGORITHMS:
        for refined, marker in ((False, "s"), (True, "o")):
            sel = runs[(runs["algorithm"] == name) & ((runs["refine_round"] > 0) == refined)]
            if sel.empty:
                continue
            ypos = np.array([y_pos[v] for v in (sel[y] if y else [None] * len(sel))], dtype=float)
            ypos += 0.4 * sel["seed"].to_numpy() / (runs["seed"].max() + 1) - 0.2  # seeds side by side
            right.scatter(sel[x], ypos, color=COLORS[name], marker=marker, s=28,
                          edgecolor="black", lw=0.4,
                          label=f"{name} ({'refinement' if refined else 'grid'})")
    right.set_yticks(range(len(y_values)), [f"{v}" for v in y_values] if y else [""])
    right.set_ylabel(y.replace("_", " ") if y else "")
    right.set_xlabel(x.replace("_", " "))
    right.set_title("runs: grid (squares) and added by refinement (circles)")
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return [_save(fig, Path(figures_dir) / "refinement.png")]


def draw(results_dir, figures_dir=None) -> list[Path]:
    """Every figure of this module that the results folder has data for."""
    results_dir = Path(results_dir)
    figures_dir = Path(figures_dir) if figures_dir else results_dir / "figures"
    paths = []
    if (results_dir / history.HISTORY).is_file():
        paths += draw_history(results_dir, figures_dir)
    if (results_dir / refine.REFINEMENT).is_file():
        paths += draw_refinement(results_dir, figures_dir)
    return paths


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m phasescan.plot_beyond RESULTS_DIR [FIGURES_DIR]")
    for path in draw(*sys.argv[1:]):
        print(path)
