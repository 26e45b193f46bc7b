"""How fragile a sweep's labels are: the same sweep trained twice in ways that should not matter
(another chunk size, device count or CPU: float32 rounds differently, and training amplifies it)
and its labels compared run by run (`python -m phasescan.report DIR --stability OTHER_DIR`).

A cell (one point of the swept axes, its seeds) is *fragile* when its majority label could be
decided by the runs that changed: the two trainings give it different majorities, or its
majority's lead over the next label (runs) is no more than the runs whose label changed. Such a
cell's majority is a coin flip of rounding, not a phase.

The report records the other training's labels in the folder (stability.parquet, `record`), so
the phase diagram can outline the fragile cells of its own axes (`fragile_cells`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.classify import ALGORITHMS
from ..core.config import ConfigError
from ..store import results

KEYS = ("run_id", "algorithm")
STABILITY = "stability.parquet"  # run_id, algorithm_other, compared_with: one block per comparison


def majority(labels: pd.Series) -> tuple[str, int]:
    """The most common label (ties: the earlier in ALGORITHMS, as the phase diagram's cells) and
    its lead over the next."""
    order = [a for a in ALGORITHMS if a in set(labels)] + sorted(set(labels) - set(ALGORITHMS))
    counts = labels.value_counts().reindex(order).sort_values(ascending=False, kind="stable")
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


def record(out_dir, other_dir, runs: pd.DataFrame, other: pd.DataFrame) -> Path:
    """Keep the other training's labels in out_dir/stability.parquet. A comparison with the same
    folder again replaces its own rows; comparisons with other folders are kept."""
    path = Path(out_dir) / STABILITY
    name = str(other_dir)
    new = paired(runs, other)[["run_id", "algorithm_other"]].assign(compared_with=name)
    if path.is_file():
        kept = pd.read_parquet(path)
        new = pd.concat([kept[kept["compared_with"] != name], new], ignore_index=True)
    results.write_atomic(path, lambda tmp: new.to_parquet(tmp, index=False))
    return path


def fragile_cells(runs: pd.DataFrame, out_dir, cell: list[str]) -> pd.DataFrame | None:
    """The cells (their `cell` values) fragile in any comparison recorded in out_dir, or None when
    none was recorded (nothing is known, which is not the same as nothing fragile)."""
    path = Path(out_dir) / STABILITY if out_dir is not None else None
    if path is None or not path.is_file():
        return None
    fragile = []
    for _, group in pd.read_parquet(path).groupby("compared_with", sort=True):
        cells = compare(runs, group.rename(columns={"algorithm_other": "algorithm"}), cell)
        fragile.append(cells.loc[cells["fragile"], cell])
    return pd.concat(fragile, ignore_index=True).drop_duplicates().reset_index(drop=True)
