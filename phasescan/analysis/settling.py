"""When a model's label and metrics stop changing during training, read off its history
(train.log_every; store/history.py): how many steps a study needs.

For one run, the *settling step* of its label is the first logged step from which the label
stays what it is at the last logged step; for a metric, the first logged step from which the
metric stays within `tolerance` of its last value. A study trained for N steps labels a run as
it would after the full run when N >= that run's settling step; `changed_share` counts, for
candidate step counts N, the runs whose label at N differs from their label at the last step.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("grad_sym", "dist_irr", "dist_irr_top_wrong", "circularity")
TOLERANCE = 0.02  # about a single model's grad_sym sampling noise (docs/metrics.md)


def settling_step(steps: np.ndarray, values: np.ndarray, tolerance: float | None = None) -> int:
    """The first step from which `values` stay equal to (tolerance None) or within `tolerance`
    of their last value; steps and values in step order."""
    last = values[-1]
    if tolerance is None:
        off = np.array([v != last for v in values])
    else:
        off = ~(np.abs(values.astype(float) - float(last)) <= tolerance)  # NaN counts as off
    moved = np.flatnonzero(off)
    return int(steps[0] if moved.size == 0 else steps[min(moved[-1] + 1, len(steps) - 1)])


def per_run(hist: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per run: its fields of the history table (d_model, attn_rate, seed when there),
    the final label, and the settling step of the label and of each metric in METRICS."""
    keep = [c for c in ("d_model", "attn_rate", "seed", "p") if c in hist]
    rows = []
    for run_id, run in hist.sort_values("step").groupby("run_id", sort=True):
        steps = run["step"].to_numpy()
        row = {"run_id": run_id, **{c: run[c].iloc[0] for c in keep},
               "final_algorithm": run["algorithm"].iloc[-1], "last_step": int(steps[-1]),
               "label_settles": settling_step(steps, run["algorithm"].to_numpy())}
        for metric in METRICS:
            if metric in run:
                row[f"{metric}_settles"] = settling_step(steps, run[metric].to_numpy(), tolerance)
        rows.append(row)
    return pd.DataFrame(rows)


def changed_share(hist: pd.DataFrame, candidates) -> pd.DataFrame:
    """For each candidate step count N (a logged step): runs, the count and share of runs whose
    label at step N differs from their label at their last logged step, and the median absolute
    change of each metric in METRICS between step N and the last step."""
    ordered = hist.sort_values("step")
    last = ordered.groupby("run_id").last()
    rows = []
    for n in candidates:
        at = hist[hist["step"] == n].set_index("run_id")
        if at.empty:
            raise ValueError(f"step {n} was not logged (logged: every {int(np.diff(np.unique(hist['step']))[0])} steps)")
        differs = at["algorithm"] != last["algorithm"].reindex(at.index)
        row = {"steps": int(n), "runs": int(len(at)), "label_differs": int(differs.sum()),
               "share_differs": float(differs.mean())}
        for metric in METRICS:
            if metric in at:
                row[f"median |d {metric}|"] = float((at[metric] - last[metric].reindex(at.index)).abs().median())
        rows.append(row)
    return pd.DataFrame(rows)
