"""How fragile a sweep's labels are: the same sweep trained twice in ways that should not matter
(another chunk size, device count or CPU: float32 rounds differently, and training amplifies it)
and its labels compared run by run (`python -m phasescan.report DIR --stability OTHER_DIR`).

A cell (one point of the swept axes, its seeds) is *fragile* when its majority label could be
decided by the runs that changed: the two trainings give it different majorities, or its
majority's lead over the next label (runs) is no more than the runs whose label changed. Such a
cell's majority is a coin flip of rounding, not a phase.
"""
from __future__ import annotations

import pandas as pd

from ..spec.config import ConfigError

KEYS = ("run_id", "algorithm")


def majority(labels: pd.Series) -> tuple[str, int]:
    """The most common label (ties: the first in sorted order) and its lead over the next."""
    counts = labels.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    lead = int(counts.iloc[0] - (counts.iloc[1] if len(counts) > 1 else 0))
    return str(counts.index[0]), lead


def paired(runs: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The runs of both tables, each with its label in the other as `algorithm_other`."""
    return runs.merge(other[list(KEYS)], on="run_id", suffixes=("", "_other"))


def compare(runs: pd.DataFrame, other: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """One row per cell: runs in both, runs whose label changed, the share unchanged, the majority
    of each and its lead, and whether the cell is fragile. The run_ids must be the same sweep's."""
    both = paired(runs, other)
    if both.empty:
        raise ConfigError("the two folders have no run_id in common: not the same sweep "
                          "(compare a sweep with itself trained again, e.g. another sweep.chunk_size)")
    rows = []
    for key, group in both.groupby(cell, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        changed = int((group["algorithm"] != group["algorithm_other"]).sum())
        here, lead = majority(group["algorithm"])
        there, lead_other = majority(group["algorithm_other"])
        rows.append({**dict(zip(cell, key)), "runs": len(group), "changed": changed,
                     "unchanged share": 1 - changed / len(group), "majority": here, "lead": lead,
                     "majority (other)": there, "lead (other)": lead_other,
                     "fragile": here != there or (changed > 0 and lead <= changed)})
    return pd.DataFrame(rows)


def changed_runs(runs: pd.DataFrame, other: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """The runs whose label differs, with both labels."""
    both = paired(runs, other)
    keep = ["run_id", *cell, "seed", "algorithm", "algorithm_other"]
    return both.loc[both["algorithm"] != both["algorithm_other"], [c for c in keep if c in both]]
