"""Figures of a sweep's training history (train.log_every; store/history.py): history_metrics.png,
metrics over training for one run per attention rate; history_phases.png, the algorithm shares per
attention rate at several steps; history_loss.png, every run's training loss (log scale), a panel
per train.cross_entropy. Colours: the Okabe-Ito colour-blind-safe palette."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..analysis import settling
from ..analysis.table import swept_axes  # noqa: E402
from ..core.classify import ALGORITHMS  # noqa: E402
from ..store import history, results
from .style import COLORS, OKABE_ITO, pooled_values  # noqa: E402  (one colour per class in every figure)

HISTORY_PANELS = [("test_acc", "test accuracy"), ("grad_sym", "gradient symmetricity"),
                  ("dist_irr", "distance irrelevance"), ("circularity", "circularity")]


def save_pyplot(fig, folder: Path, name: str, formats=("png",)) -> list[Path]:
    """A pyplot figure written atomically in each format, then closed."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        results.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format=fmt))
        paths.append(path)
    plt.close(fig)
    return paths


def chosen_runs(hist: pd.DataFrame, max_runs: int = 6) -> list[str]:
    """One run per attention rate (its lowest seed, first width), at most `max_runs`, evenly picked."""
    firsts = (hist.drop_duplicates("run_id").sort_values(["attn_rate", "d_model", "seed"])
              .drop_duplicates("attn_rate"))
    pick = np.unique(np.linspace(0, len(firsts) - 1, min(max_runs, len(firsts))).round().astype(int))
    return list(firsts["run_id"].iloc[pick])


def draw_history(results_dir, figures_dir, formats=("png",)) -> list[Path]:
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
    n_runs = hist["run_id"].nunique()
    fig.suptitle(f"Metrics during training of {len(ids)} of the {n_runs} runs (one per attention rate: "
                 "its lowest seed at its smallest width; dotted: test accuracy first >= 0.9)", y=1.04)
    paths = save_pyplot(fig, figures_dir, "history_metrics", formats)

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
    paths += save_pyplot(fig, figures_dir, "history_phases", formats)
    paths += save_pyplot(loss_history(hist), figures_dir, "history_loss", formats)
    paths += save_pyplot(settling_figure(hist), figures_dir, "history_settling", formats)
    return paths


def settling_figure(hist: pd.DataFrame):
    """How many steps a study needs: per width, the share of runs whose label at each logged step
    differs from their last label, and the median distance of each metric from its last value
    (analysis/settling.py; `python -m phasescan.report DIR --settling` prints the numbers)."""
    steps = np.sort(hist["step"].unique())[1:]
    by = "d_model" if "d_model" in swept_axes(hist) else None
    groups = list(hist.groupby(by, sort=True)) if by else [("all runs", hist)]
    shown = [m for m in settling.METRICS if m in hist]
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(4 * (1 + len(shown)), 3.4), squeeze=False)
    for colour, (value, group) in zip(OKABE_ITO, groups):
        changed = settling.changed_share(group, steps)
        name = f"d_model {value}" if by else value
        axes[0, 0].plot(changed["steps"], changed["share_differs"], color=colour, label=name)
        for ax, metric in zip(axes[0, 1:], shown):
            ax.plot(changed["steps"], changed[f"median |d {metric}|"], color=colour, label=name)
    axes[0, 0].set_title("label differs from the last step's")
    axes[0, 0].set_ylabel("share of runs")
    axes[0, 0].legend(fontsize=7)
    for ax, metric in zip(axes[0, 1:], shown):
        ax.set_title(f"median |{metric} - last|")
        ax.set_yscale("log")
    for ax in axes[0]:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"When labels and metrics settle ({hist['run_id'].nunique()} runs, logged every "
                 f"{int(steps[1] - steps[0]) if len(steps) > 1 else 0} steps)", y=1.04)
    return fig


def loss_history(hist: pd.DataFrame):
    """Every run's training loss over the logged steps on a log axis, coloured by attention
    rate, one panel per train.cross_entropy: a model that spikes after it fit shows at a glance."""
    losses = sorted(hist["cross_entropy"].dropna().unique()) if "cross_entropy" in hist else [None]
    rates = np.sort(hist["attn_rate"].unique())
    widths = np.sort(hist["d_model"].unique())
    # The attention rate is a number: one colour scale (not the classes' colours, none repeated);
    # widths apart by line style.
    cmap = plt.get_cmap("viridis")
    colour = {r: cmap(i / max(len(rates) - 1, 1)) for i, r in enumerate(rates)}
    style = dict(zip(widths, ["-", "--", ":", "-."] * len(widths)))
    fig, axes = plt.subplots(1, len(losses), figsize=(5.5 * len(losses), 3.6), sharey=True,
                             squeeze=False)
    for ax, loss in zip(axes[0], losses):
        shown = hist if loss is None else hist[hist["cross_entropy"] == loss]
        for run_id, run in shown.groupby("run_id"):
            run = run.sort_values("step")
            ax.plot(run["step"], run["train_loss"], color=colour[run["attn_rate"].iloc[0]], lw=1.2,
                    ls=style[run["d_model"].iloc[0]], marker="o", ms=2.5)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"train.cross_entropy = {loss}" if loss else "training loss", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("training loss (logged steps)")
    handles = [plt.Line2D([], [], color=colour[r], lw=2) for r in rates]
    names = [f"attn {r:g}" for r in rates]
    if len(widths) > 1:
        handles += [plt.Line2D([], [], color="black", ls=style[w], lw=1.2) for w in widths]
        names += [f"d {w}" for w in widths]
    axes[0, -1].legend(handles, names, fontsize=7, loc="upper right", ncol=1 + (len(names) > 12))
    fig.suptitle("Training loss of every run", y=1.02)
    return fig
