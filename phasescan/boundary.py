"""The phase boundary: for each value of a y axis (e.g. width), the x (attention rate) where the
Pizza share first drops below one half, with a bootstrap interval over seeds.

The Pizza share of a cell is the fraction of its runs labelled `pizza`. Along x the shares are
joined piecewise-linearly and the boundary is the first downward crossing of 0.5. `status` says
`crossing`, `below` (< 0.5 already at the smallest x) or `above` (never drops below 0.5); the
boundary is NaN unless a crossing exists. The interval re-samples the runs of every cell with
replacement (`n_boot` times) and takes the 2.5 / 97.5 percentiles of the crossings found.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def first_crossing(x: np.ndarray, share: np.ndarray, level: float = 0.5) -> float:
    """x where the piecewise-linear share first falls from >= level to < level (NaN if never)."""
    for i in range(len(x)):
        if share[i] < level:
            if i == 0:
                return np.nan
            x0, x1, s0, s1 = x[i - 1], x[i], share[i - 1], share[i]
            return float(x0 + (s0 - level) / (s0 - s1) * (x1 - x0))
    return np.nan


def estimate(runs: pd.DataFrame, x: str = "attn_rate", y: str = "d_model", label: str = "pizza",
             n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per y value: boundary, lo, hi (95% bootstrap), status, n_cells, runs_per_cell."""
    rng = np.random.default_rng(seed)
    rows = []
    for y_value, group in runs.groupby(y, sort=True):
        cells = [(xv, (cell["algorithm"] == label).to_numpy(float))
                 for xv, cell in group.groupby(x, sort=True)]
        xs = np.array([c[0] for c in cells], dtype=float)
        shares = np.array([c[1].mean() for c in cells])
        boundary = first_crossing(xs, shares)
        status = "crossing" if np.isfinite(boundary) else ("below" if shares[0] < 0.5 else "above")
        boots = np.array([first_crossing(xs, np.array([rng.choice(v, v.size).mean() for _, v in cells]))
                          for _ in range(n_boot)])
        found = boots[np.isfinite(boots)]
        lo, hi = (np.percentile(found, [2.5, 97.5]) if found.size else (np.nan, np.nan))
        rows.append({y: y_value, "boundary": boundary, "lo": lo, "hi": hi, "status": status,
                     "boot_found": found.size / n_boot, "n_cells": len(cells),
                     "runs_per_cell": int(np.median([v.size for _, v in cells]))})
    return pd.DataFrame(rows)
