"""Phase cells of a runs table, and the compact text phase table printed at the end of a sweep.

A *cell* is one (y, x) grid point, e.g. (width, attention rate); its runs are the seeds there and,
when more axes were swept than x and y, every value of those other axes (pooled: `pooled_axes`
names them). The plots (plot.py) draw the same cells.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.classify import ALGORITHMS, LEARNING_PHASES
from ..core.config import FIELDS, ConfigError

INITIALS = {"clock": "C", "pizza": "P", "mixed": "m", "other": "o", "non_circular": "n", "unlearned": "u",
            "diverged": "d"}
assert set(INITIALS) == set(ALGORITHMS)
PHASE_INITIALS = {"comprehension": "C", "grokking": "G", "memorization": "M", "confusion": "X", "diverged": "d"}
assert set(PHASE_INITIALS) == set(LEARNING_PHASES)
# The two labels a model gets, each with its classes in order (ties go to the earlier).
LABELS = {"algorithm": ALGORITHMS, "learning_phase": LEARNING_PHASES}
# The dynamics columns whose per-cell medians go with the learning phase (-1: the step never came).
DYNAMICS_STEPS = ("memorize_step", "generalize_step")
# The fields that make another task (another p is another modular addition, not another seed of
# the same one): a diagram, a boundary or a phase table never pools them; a sweep over several
# tasks (the p ladder) gets one of each per task (`by_task`).
TASK_AXES = ("p", "op", "input_format")


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


def by_task(frame: pd.DataFrame, pooled: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """({task axis: value}, its runs) per task among the `pooled` axes (TASK_AXES), in order;
    [({}, frame)] when they hold one task."""
    split = [a for a in pooled if a in TASK_AXES]
    if not split:
        return [({}, frame)]
    return [(dict(zip(split, key if isinstance(key, tuple) else (key,))), group)
            for key, group in frame.groupby(split, sort=True)]


def within_task(pooled: list[str]) -> list[str]:
    """The pooled axes a per-task table or figure (by_task) still puts together: all but the task's."""
    return [a for a in pooled if a not in TASK_AXES]


def task_suffix(task: dict) -> str:
    """A file name's suffix for one task of by_task: `_p23` ("" for the only task)."""
    return "".join(f"_{axis}{short(value)}" for axis, value in task.items())


def task_head(task: dict) -> str:
    """A phase-table row's start for one task of by_task: `p 23, ` ("" for the only task)."""
    return "".join(f"{axis} {short(value)}, " for axis, value in task.items())


def has_phases(frame: pd.DataFrame) -> bool:
    """The table carries the learning dynamics (tables from before them have no learning_phase)."""
    return "learning_phase" in frame and frame["learning_phase"].notna().any()


def joint_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs per (learning phase, algorithm): rows the phases, columns the algorithms, both in
    their classify order, only those that occur."""
    counts = pd.crosstab(frame["learning_phase"], frame["algorithm"])
    rows = [p for p in LEARNING_PHASES if p in counts.index]
    return counts.reindex(index=rows, columns=[a for a in ALGORITHMS if a in counts.columns], fill_value=0)


def cells(frame: pd.DataFrame, x: str, y: str, label: str = "algorithm") -> pd.DataFrame:
    """One row per (y, x) cell: n runs, count of each class of `label` (algorithm or
    learning_phase), the majority class and its count (ties go to the earlier in LABELS[label]),
    median grad_sym and dist_irr; with the dynamics columns, the median memorize_step and
    generalize_step over the runs that reached them and the median generalization_delay."""
    if label not in frame:
        raise ConfigError([f"{label}: not a column of this table (a table from before the learning dynamics?)"])
    groups = frame.groupby([y, x], sort=True, dropna=False)
    counts = (groups[label].value_counts().unstack(fill_value=0)
              .reindex(columns=list(LABELS[label]), fill_value=0))
    out = counts.copy()
    out["n"] = counts.sum(axis=1)
    out["majority"] = counts.idxmax(axis=1)
    out["majority_count"] = counts.max(axis=1)
    for metric in ("grad_sym", "dist_irr"):
        out[f"median_{metric}"] = groups[metric].median()
    if "generalization_delay" in frame:
        reached = frame[list(DYNAMICS_STEPS)].where(frame[list(DYNAMICS_STEPS)] >= 0)
        steps = reached.groupby([frame[y], frame[x]], sort=True, dropna=False)
        for metric in DYNAMICS_STEPS:
            out[f"median_{metric}"] = steps[metric].median()
        out["median_generalization_delay"] = groups["generalization_delay"].median()
    return out.reset_index()


def short(value) -> str:
    """A grid value for a header: 0.15, 32, 1e-03."""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def format_table(frame: pd.DataFrame, x: str = "attn_rate", y: str = "d_model",
                 label: str = "algorithm") -> str:
    """Rows = y values, columns = x values, cell = majority initial and its share, e.g. `P 3/4`
    (`label="learning_phase"`: the learning phases', e.g. `G 2/3`)."""
    x, y, pooled = resolve_axes(frame, x, y)
    initials = INITIALS if label == "algorithm" else PHASE_INITIALS
    xs = sorted(frame[x].unique(), key=_order)
    tasks = by_task(frame, pooled)  # several: rows per (task, y), e.g. `p 23, 52`
    corner = ", ".join([*tasks[0][0], y]) + f" \\ {x}"
    rows = [[corner] + [short(v) for v in xs]]
    for task, runs in tasks:
        table = cells(runs, x, y, label)
        text = {(r[y], r[x]): f"{initials[r['majority']]} {r['majority_count']}/{r['n']}"
                for _, r in table.iterrows()}
        rows += [[task_head(task) + short(yv)] + [text.get((yv, xv), "-") for xv in xs]
                 for yv in sorted(table[y].unique(), key=_order)]
    pooled = within_task(pooled)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    legend = (f"cell: majority {label.replace('_', ' ')}, runs with it / runs; "
              + ", ".join(f"{i} {name}" for name, i in initials.items()))
    if pooled:
        legend += f"; pooled over {', '.join(pooled)}"
    return "\n".join(lines + [legend])


def _order(value):
    """Sort key that also copes with None (a nullable field)."""
    return (value is None, value if value is not None else 0)
