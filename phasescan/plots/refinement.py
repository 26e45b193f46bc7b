"""The refinement figure (refine=true; analysis/refine.py): refinement.png, the boundary's
uncertain span per round, and where the refinement added models."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis import refine
from ..core.classify import ALGORITHMS
from ..store import results
from .style import COLORS
from .training import save_pyplot


def draw_refinement(results_dir, figures_dir, formats=("png",)) -> list[Path]:
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
        at = rows["refined_boundary"] if "refined_boundary" in rows else rows["boundary"]  # older folders
        left.errorbar(at, rows["round"] + offset, xerr=[at - rows["span_lo"], rows["span_hi"] - at],
                      fmt="o", color=colour, capsize=3, label=f"{y} = {y_value}" if y else "boundary")
    left.set_xlabel(x.replace("_", " "))
    left.set_ylabel("refinement round")
    left.set_yticks(sorted(table["round"].unique()))
    left.invert_yaxis()
    refined = table["refined"].iloc[0] if "refined" in table else "the label share"
    left.set_title(f"boundary ({refined}) and its uncertain span per round", fontsize=10)
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
    return save_pyplot(fig, Path(figures_dir), "refinement", formats)
