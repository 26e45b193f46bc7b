"""Phase cells of a runs table, and the compact text phase table printed at the end of a sweep.

A *cell* is one (y, x) grid point, e.g. (width, attention rate); its runs are the seeds there and,
when more axes were swept than x and y, every value of those other axes (pooled: `pooled_axes`
names them). The plots (plot.py) draw the same cells.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..spec.classify import ALGORITHMS
from ..spec.config import FIELDS, ConfigError

INITIALS = {"clock": "C", "pizza": "P", "mixed": "m", "other": "o", "non_circular": "n", "unlearned": "u",
            "diverged": "d"}
assert set(INITIALS) == set(ALGORITHMS)


def swept_axes(frame: pd.DataFrame) -> list[str]:
    """The fields that take more than one value in the table, in registry order."""
    return [name for name in FIELDS if name in frame and frame[name].nunique(dropna=False) > 1]


def resolve_axes(frame: pd.DataFrame, x: str = "attn_rate", y: str = "d_model") -> tuple[str, str, list[str]]:
    """Check x and y; return (x, y, pooled axes). x falls back to the first swept axis when the
    default attn_rate was not swept; y may be an unswept field (a 1-D diagram: one row)."""
    problems = [f"{key}={name}: not a field (allowed: {', '.join(FIELDS)})"
                for key, name in (("x", x), ("y", y)) if name not in FIELDS or name not in frame]
    if x == y:
        problems.append(f"x={x}, y={y}: x and y must be different fields")
    if problems:
        raise ConfigError(problems)
    swept = swept_axes(frame)
    if x not in swept and x == "attn_rate":
        x = next((a for a in swept if a != y), x)
    return x, y, [a for a in swept if a not in (x, y)]


def cells(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per (y, x) cell: n runs, count of each algorithm, the majority algorithm and its
    count (ties go to the earlier of classify.ALGORITHMS), median grad_sym and dist_irr."""
    groups = frame.groupby([y, x], sort=True, dropna=False)
    counts = (groups["algorithm"].value_counts().unstack(fill_value=0)
              .reindex(columns=list(ALGORITHMS), fill_value=0))
    out = counts.copy()
    out["n"] = counts.sum(axis=1)
    out["majority"] = counts.idxmax(axis=1)
    out["majority_count"] = counts.max(axis=1)
    for metric in ("grad_sym", "dist_irr"):
        out[f"median_{metric}"] = groups[metric].median()
    return out.reset_index()


def short(value) -> str:
    """A grid value for a header: 0.15, 32, 1e-03."""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def format_table(frame: pd.DataFrame, x: str = "attn_rate", y: str = "d_model") -> str:
    """Rows = y values, columns = x values, cell = majority initial and its share, e.g. `P 3/4`."""
    x, y, pooled = resolve_axes(frame, x, y)
    table = cells(frame, x, y)
    xs = sorted(table[x].unique(), key=_order)
    ys = sorted(table[y].unique(), key=_order)
    text = {(r[y], r[x]): f"{INITIALS[r['majority']]} {r['majority_count']}/{r['n']}"
            for _, r in table.iterrows()}
    corner = f"{y} \\ {x}"
    rows = [[corner] + [short(v) for v in xs]]
    rows += [[short(yv)] + [text.get((yv, xv), "-") for xv in xs] for yv in ys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    legend = ("cell: majority algorithm, runs with it / runs; "
              + ", ".join(f"{i} {name}" for name, i in INITIALS.items()))
    if pooled:
        legend += f"; pooled over {', '.join(pooled)}"
    return "\n".join(lines + [legend])


def _order(value):
    """Sort key that also copes with None (a nullable field)."""
    return (value is None, value if value is not None else 0)
