"""Adaptive boundary refinement: spend extra models where the phase boundary is uncertain.

After the grid, each round looks at every value of the `y` axis (e.g. width) separately:
  * the label share per cell (fraction of runs labelled `label`, e.g. pizza) along the `x` axis
    (e.g. attention rate) and the boundary with its bootstrap interval (boundary.estimate). With
    `against` (clock, the default) the boundary refined is the Pizza -> Clock one, the share among
    the runs labelled `label` or `against`: a drop of the Pizza share where unlearned or
    non-circular models take over is no transition to spend models on. `against: null` refines the
    first drop of the share among all runs. Each round's table keeps both (boundary.estimate's
    columns) and says which was refined (`refined`, `refined_boundary`, ...);
  * the *uncertain span*: the grid interval that brackets the crossing, widened to the bootstrap
    interval. A y value is converged when the span is at most `tolerance` wide;
  * otherwise the round adds the midpoint of every grid interval in the span wider than
    `tolerance` (with `seeds` seeds), and, where the seeds of a cell in the span disagree, `seeds`
    more seeds there (at most `max_seeds` per cell).
New models are ordinary runs (grid.run_id; the row's `refine_round` says when they were added)
and are handed to a *labeller*: `list[run dict] -> rows with run_id, x, y, seed, algorithm`. The
sweep's labeller trains them through the sweep's own chunk loop; tests use a cheap synthetic one.
Proposals of round r depend only on rows of rounds < r, so a resumed refinement adds the same
runs (already trained ones are not trained again). Rounds stop at `rounds`, when every y value has
converged, or when `budget` (models over all rounds) is spent. Each round's spans are written to
out_dir/refinement.parquet.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..core import grid
from ..core.classify import ALGORITHMS
from ..core.config import FIELDS, MAX_SEED, ConfigError, is_int, is_number
from ..store import results
from . import boundary

log = logging.getLogger("phasescan")

REFINEMENT = "refinement.parquet"
Labeller = Callable[[list[dict]], pd.DataFrame]

KEYS = ("budget", "rounds", "tolerance", "x", "y", "label", "against", "seeds", "max_seeds", "n_boot")


def options(cfg: dict) -> dict | None:
    """The validated `refinement` options when `refine` is true, else None."""
    if not cfg.get("refine"):
        return None
    if cfg["refine"] is not True:
        raise ConfigError(f"refine={cfg['refine']!r}: must be true or false")
    opts = dict(cfg.get("refinement") or {})
    unknown, missing = sorted(set(opts) - set(KEYS)), [k for k in KEYS if k not in opts]
    if unknown or missing:
        raise ConfigError([f"refinement.{k}: unknown key (allowed: {', '.join(KEYS)})" for k in unknown]
                          + [f"refinement.{k}: missing" for k in missing])
    seeds = cfg["sweep"]["seeds"]
    opts["seeds"] = opts["seeds"] or seeds
    opts["max_seeds"] = opts["max_seeds"] or 4 * seeds
    opts["seed_start"] = cfg["sweep"].get("seed_start", 0)
    problems = []
    for key in ("budget", "rounds", "seeds", "max_seeds", "n_boot"):
        v = opts[key]
        if not is_int(v) or v < 1:
            problems.append(f"refinement.{key}={v!r}: must be a positive integer")
    last = opts["seed_start"] + opts["max_seeds"] - 1  # the largest seed refinement may add
    if not problems and is_int(opts["seed_start"]) and last > MAX_SEED:
        problems.append(f"refinement.max_seeds={opts['max_seeds']}: seeds up to sweep.seed_start + "
                        f"max_seeds - 1 = {last} would pass {MAX_SEED} (32-bit JAX seeds); lower "
                        "sweep.seed_start or refinement.max_seeds")
    tol = opts["tolerance"]
    if not is_number(tol) or tol <= 0:
        problems.append(f"refinement.tolerance={tol!r}: must be a number > 0")
    floats = [n for n, f in FIELDS.items() if f.type is float]
    if opts["x"] not in floats:
        problems.append(f"refinement.x={opts['x']!r}: must be one of {', '.join(floats)}")
    if opts["y"] is not None and (opts["y"] not in FIELDS or opts["y"] == opts["x"]):
        problems.append(f"refinement.y={opts['y']!r}: must be null or a field other than x "
                        f"(one of {', '.join(FIELDS)})")
    if opts["label"] not in ALGORITHMS:
        problems.append(f"refinement.label={opts['label']!r}: must be one of {', '.join(ALGORITHMS)}")
    if opts["against"] is not None and (opts["against"] not in ALGORITHMS or opts["against"] == opts["label"]):
        problems.append(f"refinement.against={opts['against']!r}: must be null or a class other than "
                        f"refinement.label (one of {', '.join(ALGORITHMS)})")
    if problems:
        raise ConfigError(problems)
    return opts


def spans(frame: pd.DataFrame, opts: dict) -> pd.DataFrame:
    """Per y value: the boundary, its bootstrap interval, the uncertain span and its width."""
    x, y = opts["x"], opts["y"] or "_all"
    frame = frame.assign(_all=0) if opts["y"] is None else frame
    against = opts["against"]
    table = boundary.estimate(frame, x=x, y=y, label=opts["label"], n_boot=opts["n_boot"], against=against)
    prefix = "against_" if against else ""  # which of the two crossings is refined
    for k in ("boundary", "lo", "hi", "status"):
        table[f"refined_{k}"] = table[prefix + k]
    table["refined"] = f"{opts['label']} -> {against}" if against else f"{opts['label']} share"
    span_lo, span_hi = [], []
    for _, row in table.iterrows():
        xs = np.sort(frame.loc[frame[y] == row[y], x].unique())
        if row["refined_status"] != "crossing":
            span_lo.append(np.nan), span_hi.append(np.nan)
            continue
        right = int(np.searchsorted(xs, row["refined_boundary"], side="right"))  # first x past it
        right = min(max(right, 1), len(xs) - 1)
        lo = np.nanmin([xs[right - 1], row["refined_lo"]])
        hi = np.nanmax([xs[right], row["refined_hi"]])
        span_lo.append(lo), span_hi.append(hi)
    table["span_lo"], table["span_hi"] = span_lo, span_hi
    table["width"] = table["span_hi"] - table["span_lo"]
    table["converged"] = (table["refined_status"] != "crossing") | (table["width"] <= opts["tolerance"] + 1e-12)
    table["n_runs"] = [int((frame[y] == v).sum()) for v in table[y]]
    return table.assign(x_axis=x, y_axis=opts["y"] or "")


def propose(frame: pd.DataFrame, table: pd.DataFrame, opts: dict) -> list[list[tuple]]:
    """Per unconverged y value, the new (y, x, seeds) points: midpoints, then more seeds."""
    x, y = opts["x"], opts["y"]
    per_y = []
    for _, row in table[~table["converged"]].iterrows():
        group = frame if y is None else frame[frame[y] == row[y]]
        y_value = None if y is None else row[y]
        xs = np.sort(group[x].unique())
        inside = xs[(xs >= row["span_lo"] - 1e-12) & (xs <= row["span_hi"] + 1e-12)]
        grid_seeds = list(range(opts["seed_start"], opts["seed_start"] + opts["seeds"]))
        points = []
        for a, b in zip(inside[:-1], inside[1:]):
            if b - a > opts["tolerance"]:
                mid = float(f"{(a + b) / 2:.12g}")  # the grid's 12 significant digits
                points.append((y_value, mid, grid_seeds))
        for xv in inside:
            cell = group[group[x] == xv]
            share = (cell["algorithm"] == opts["label"]).mean()
            if 0 < share < 1 and len(cell) < opts["max_seeds"]:
                first = int(cell["seed"].max()) + 1
                n = min(opts["seeds"], opts["max_seeds"] - len(cell))
                points.append((y_value, float(xv), list(range(first, first + n))))
        per_y.append(points)
    return per_y


def new_runs(frame: pd.DataFrame, point: tuple, opts: dict, round_: int) -> list[dict]:
    """Run dicts of one proposed point: a run of the same y value with x and the seed replaced
    (run_index is given later)."""
    x, y = opts["x"], opts["y"]
    y_value, x_value, seeds = point
    template = grid.run_from_row(frame.iloc[0] if y is None else frame[frame[y] == y_value].iloc[0])
    runs = []
    for seed in seeds:
        run = template | {x: x_value, "seed": seed, "refine_round": round_}
        run["data_seed"] = grid.data_seed(run, seed)
        run["run_id"] = grid.run_id(run)
        runs.append(run)
    return runs


def refine(frame: pd.DataFrame, opts: dict, labeller: Labeller) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Refinement rounds from the grid's rows `frame`. Returns (all rows, spans of every round)."""
    tables, spent = [], 0
    for round_ in range(opts["rounds"] + 1):
        table = spans(frame, opts).assign(round=round_, models_added=spent)
        tables.append(table)
        if round_ == opts["rounds"] or table["converged"].all() or spent >= opts["budget"]:
            break
        runs, known = [], set(frame["run_id"])
        for point in _round_robin(propose(frame, table, opts)):  # a tight budget is shared by all y
            batch = [r for r in new_runs(frame, point, opts, round_ + 1) if r["run_id"] not in known]
            if spent + len(runs) + len(batch) > opts["budget"]:
                break
            known.update(r["run_id"] for r in batch)
            runs += batch
        if not runs:
            break
        first = int(frame["run_index"].max()) + 1
        for i, run in enumerate(runs):
            run["run_index"] = first + i
        frame = pd.concat([frame, labeller(runs)], ignore_index=True)
        spent += len(runs)
    return frame, pd.concat(tables, ignore_index=True)


def _round_robin(per_y: list[list]) -> list:
    """[[a1, a2], [b1]] -> [a1, b1, a2]."""
    out = []
    for i in range(max((len(p) for p in per_y), default=0)):
        out += [p[i] for p in per_y if i < len(p)]
    return out


def run(cfg: dict, out_dir: Path, labeller: Labeller) -> pd.DataFrame:
    """Refine a finished grid in out_dir; write refinement.parquet; return the rows of the grid
    and of every run the rounds added."""
    opts = options(cfg)
    frame = results.read_chunks(out_dir)
    frame = frame[frame["refine_round"] == 0].reset_index(drop=True)
    rows, table = refine(frame, opts, labeller)
    results.write_atomic(Path(out_dir) / REFINEMENT, lambda tmp: table.to_parquet(tmp, index=False))
    return rows


def forget(out_dir: Path) -> None:
    """A command without refine=true on a refined folder: its runs.parquet is the grid alone, so
    the rounds' record goes too (the refined runs stay in chunks/: refine=true brings both back
    without training)."""
    path = Path(out_dir) / REFINEMENT
    if path.is_file():
        log.info("refine=false: %s removed, the refined runs left out of runs.parquet (they stay in "
                 "chunks/; the refine=true command brings them back without training)", path)
        path.unlink()
