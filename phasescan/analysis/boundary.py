"""The phase boundary: for each value of a y axis (e.g. width), the x (attention rate) where the
Pizza share first drops below one half, which class takes over there, and the Pizza -> Clock
boundary among the models that learned one of the two; each with a bootstrap interval over seeds.

The share of a cell is the fraction of its runs labelled `label` (pizza). Along x the shares are
joined piecewise-linearly and the boundary is the first downward crossing of 0.5. `status` says
`crossing`, `below` (< 0.5 already at the smallest x) or `above` (never drops below 0.5); the
boundary is NaN unless a crossing exists. `replaced_by` names the class holding the largest share
of the first cell past the crossing (the label excluded): a crossing where `unlearned` or
`non_circular` takes over is no Pizza -> Clock transition.

With `against` (clock), the same crossing is also found among only the runs labelled `label` or
`against` (columns `against_boundary`, `against_lo`, ...): the Pizza share of Pizza and Clock runs,
so unlearned, non-circular and mixed runs neither hide nor fake the transition; cells without such
a run are left out, `against_runs` is the median count of such runs per cell that has any.

The interval re-samples the runs of every cell with replacement (`n_boot` times) and takes the
2.5 / 97.5 percentiles of the crossings found; `bootstrap` returns those crossings themselves.
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


def _cells(group: pd.DataFrame, x: str, label: str) -> list[tuple[float, np.ndarray]]:
    """(x value, 0/1 array: run labelled `label`) per cell, in x order."""
    return [(xv, (cell["algorithm"] == label).to_numpy(float)) for xv, cell in group.groupby(x, sort=True)]


def bootstrap(cells: list[tuple[float, np.ndarray]], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The crossing of each of `n_boot` resamples (runs of every cell drawn with replacement)."""
    xs = np.array([c[0] for c in cells], dtype=float)
    return np.array([first_crossing(xs, np.array([rng.choice(v, v.size).mean() for _, v in cells]))
                     for _ in range(n_boot)])


def _crossing(cells, n_boot: int, rng) -> dict:
    xs = np.array([c[0] for c in cells], dtype=float)
    shares = np.array([c[1].mean() for c in cells])
    found_at = first_crossing(xs, shares) if cells else np.nan
    status = ("none" if not cells else "crossing" if np.isfinite(found_at)
              else "below" if shares[0] < 0.5 else "above")
    boots = bootstrap(cells, n_boot, rng) if cells else np.array([])
    found = boots[np.isfinite(boots)]
    lo, hi = (np.percentile(found, [2.5, 97.5]) if found.size else (np.nan, np.nan))
    return {"boundary": found_at, "lo": lo, "hi": hi, "status": status,
            "boot_found": found.size / n_boot if n_boot else np.nan, "n_cells": len(cells),
            "runs_per_cell": int(np.median([v.size for _, v in cells])) if cells else 0}


def replaced_by(group: pd.DataFrame, x: str, label: str, at: float) -> str | None:
    """The class (not `label`) with the largest share in the first cell past x = `at`."""
    if not np.isfinite(at):
        return None
    past = group[group[x] > at]
    cell = past[past[x] == past[x].min()]
    others = cell.loc[cell["algorithm"] != label, "algorithm"].value_counts()
    return str(others.index[0]) if len(others) else None


def estimate(runs: pd.DataFrame, x: str = "attn_rate", y: str = "d_model", label: str = "pizza",
             n_boot: int = 1000, seed: int = 0, against: str | None = None) -> pd.DataFrame:
    """One row per y value: boundary, lo, hi (95% bootstrap), status, replaced_by, boot_found,
    n_cells, runs_per_cell; with `against`, the same among `label` and `against` runs only
    (against_boundary, against_lo, against_hi, against_status, against_runs); x_axis, y_axis."""
    rng = np.random.default_rng(seed)
    rng_pair = np.random.default_rng([seed, 1])  # its own stream: the all-runs interval stays as without it
    rows = []
    for y_value, group in runs.groupby(y, sort=True):
        row = {y: y_value, **_crossing(_cells(group, x, label), n_boot, rng)}
        row["replaced_by"] = replaced_by(group, x, label, row["boundary"])
        if against is not None:
            pair = group[group["algorithm"].isin([label, against])]
            both = _crossing(_cells(pair, x, label), n_boot, rng_pair)
            row |= {f"against_{k}": both[k] for k in ("boundary", "lo", "hi", "status")}
            row["against_runs"] = both["runs_per_cell"]
        rows.append(row)
    return pd.DataFrame(rows).assign(x_axis=x, y_axis=y, against=against)
