"""A results folder compared with the paper, point by point (`python -m phasescan.report DIR
--paper`; docs/reproduction.md is made of its output).

The reference figures are those of ../shared/reference/clock-pizza.md (the authors' run tables,
p = 59, 20,000 steps), written once below. From the folder's runs.parquet it computes:
  * per width, the Pizza -> Clock boundary (the Pizza share among Pizza and Clock runs) with its
    95% bootstrap interval, beside the Pizza share of all runs and the class that takes over there,
    and the reference's boundary for that width;
  * per attention-rate bin of 0.1 (all widths, then per width): median grad_sym, dist_irr and
    dist_irr_top_wrong, the class shares, the share with circularity >= 0.995, beside the
    reference's fixed-width medians;
  * convergence: final training loss, parameter norm, test accuracy, spiking share;
  * a verdict on each finding, by the rules written in `verdicts`, and what a run that could
    resolve an unresolved one would need (models, and time at this folder's measured rate).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import boundary
from ..engine.train import FIT_LOSS
from ..core.classify import ALGORITHMS
from ..core.config import ConfigError
from ..store import results

CIRCULAR = 0.995  # the authors' plots keep models with circularity >= 0.995

# The reference (clock-pizza.md), as it is written there.
REFERENCE_BOUNDARY = [  # (smallest width, largest width, what the paper reports, a number for the verdict)
    (32, 64, "about 0.5", 0.5),
    (128, 256, "about 0.6", 0.6),
    (256, 512, "Pizza almost to 1", 1.0),
]
REFERENCE_TRANSITION = (0.5, 0.7)  # fixed width d = 128: "the transition sits between alpha 0.5 and 0.7"
# What that sentence describes is where grad_sym *begins* to fall. The boundary the authors' own
# fixed-width table allows (it has grad_sym, not phasescan's circles): labelled by grad_sym alone,
# the Pizza share among Pizza-or-Clock runs crosses 1/2 near this rate (clock-pizza.md).
GRAD_SYM_RULE = {"pizza_min_grad_sym": 0.9, "clock_max_grad_sym": 0.8, "min_test_acc": 0.9}
REFERENCE_GRAD_SYM_CROSSING = 0.70
REFERENCE_BINS = {  # attention-rate bins -> (median grad_sym, median dist_irr_top_wrong), d = 128, circular runs
    "<= 0.4": ("~0.99", "~0.2-0.25"),
    "0.9-1": ("~0.45", "~0.83"),
}
REFERENCE_CONVERGENCE = {
    "train_loss": "1.45e-7 (quartiles 1.37e-7 / 1.52e-7); width sweep 1.51e-7",
    "param_norm": "24.4 (quartiles 24.0 / 25.0); 24.2-25.0 in every width band",
    "test_acc": "1.0 in 99% of runs",
    "circularity": "median 0.989; a third >= 0.995; a quarter < 0.94",
    "generalization_delay": "median 47.7 (quartiles 41.8 / 54.5) at p = 59, d = 128, 47-50 in every attention-rate bin",
}
LEARNED = ("pizza", "clock", "mixed", "other", "non_circular")


def reference_boundary(width: int) -> str:
    said = [text for lo, hi, text, _ in REFERENCE_BOUNDARY if lo <= width <= hi]
    return " / ".join(said) if said else "not in the paper's width range (32-511)"


def bin_of(rate: float) -> str:
    """The 0.1-wide attention-rate bin of a rate: [0, 0.1), ..., [0.8, 0.9), [0.9, 1]."""
    k = min(int(np.floor(round(rate * 10, 9))), 9)
    return f"{k / 10:.1f}-{(k + 1) / 10:.1f}"


def bins(runs: pd.DataFrame) -> pd.DataFrame:
    """Per 0.1 bin of attention rate: runs, median grad_sym / dist_irr / dist_irr_top_wrong,
    the class shares, the share with circularity >= 0.995 and the medians among those runs."""
    frame = runs.assign(bin=[bin_of(r) for r in runs["attn_rate"]])
    rows = []
    for name, group in frame.groupby("bin", sort=True):
        circular = group[group["circularity"] >= CIRCULAR]
        row = {"attn_rate bin": name, "runs": len(group)}
        for metric in ("grad_sym", "dist_irr", "dist_irr_top_wrong"):
            row[f"median {metric}"] = group[metric].median()
        for metric in ("grad_sym", "dist_irr_top_wrong"):
            row[f"{metric} (circ >= {CIRCULAR})"] = circular[metric].median() if len(circular) else np.nan
        for name_ in ALGORITHMS:
            share = (group["algorithm"] == name_).mean()
            if share or name_ in ("pizza", "clock"):
                row[name_] = share
        row[f"circ >= {CIRCULAR}"] = (group["circularity"] >= CIRCULAR).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def convergence(runs: pd.DataFrame, by: str | None = "d_model") -> pd.DataFrame:
    """Median (quartiles) of the final training loss and parameter norm, the share with test
    accuracy 1 and with a loss spike after fitting, the circularity facts, the median (quartiles)
    generalization delay; per `by` and overall. `seeds`: how many seeds (splits and
    initialisations) the medians cover: at p = 59 the delay is set by the seed, not the rate."""
    def facts(group, label):
        q = lambda c: f"{group[c].median():.3g} ({group[c].quantile(0.25):.3g} / {group[c].quantile(0.75):.3g})"
        return {by or "runs": label, "runs": len(group), "seeds": group["seed"].nunique(),
                "train_loss": q("train_loss"), "param_norm": q("param_norm"),
                "test_acc = 1": f"{(group['test_acc'] == 1).mean():.2f}",
                "spiking": f"{(group['spike_loss'] > FIT_LOSS).mean():.2f}" if "spike_loss" in group else "n/a",
                "circularity median": f"{group['circularity'].median():.3f}",
                f"circ >= {CIRCULAR}": f"{(group['circularity'] >= CIRCULAR).mean():.2f}",
                "circ < 0.94": f"{(group['circularity'] < 0.94).mean():.2f}",
                # the authors' generalization_delay1 (older folders lack the dynamics columns)
                "generalization_delay": q("generalization_delay")
                if group.get("generalization_delay", pd.Series(dtype=float)).notna().any() else "n/a"}
    rows = [facts(g, v) for v, g in runs.groupby(by, sort=True)] if by else []
    return pd.DataFrame(rows + [facts(runs, "all")])


def grad_sym_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` labelled by grad_sym alone (GRAD_SYM_RULE: the rule the authors' tables allow):
    pizza, clock, or `neither` (in between, or test accuracy below the rule's)."""
    rule = GRAD_SYM_RULE
    learned = runs["test_acc"] >= rule["min_test_acc"]
    label = np.where(learned & (runs["grad_sym"] >= rule["pizza_min_grad_sym"]), "pizza",
                     np.where(learned & (runs["grad_sym"] <= rule["clock_max_grad_sym"]), "clock", "neither"))
    return runs.assign(algorithm=label)


def boundaries(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per width: the Pizza share crossing of all runs (and what takes over), the Pizza -> Clock
    boundary among Pizza and Clock runs with its interval, the same by grad_sym alone
    (grad_sym_labels), and the reference's."""
    table = boundary.estimate(runs, "attn_rate", "d_model", "pizza", n_boot, seed, against="clock")
    by_grad_sym = boundary.estimate(grad_sym_labels(runs), "attn_rate", "d_model", "pizza", n_boot, seed,
                                    against="clock")
    out = pd.DataFrame({
        "d_model": table["d_model"],
        "pizza share < 1/2 at": table["boundary"], "taken over by": table["replaced_by"],
        "pizza -> clock": table["against_boundary"], "95% lo": table["against_lo"],
        "95% hi": table["against_hi"], "status": table["against_status"],
        "pizza+clock runs per cell": table["against_runs"],
        "by grad_sym alone": by_grad_sym["against_boundary"], "gs 95% lo": by_grad_sym["against_lo"],
        "gs 95% hi": by_grad_sym["against_hi"], "gs status": by_grad_sym["against_status"],
        "reference": [reference_boundary(int(d)) for d in table["d_model"]]})
    return out


def width_slope(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """The slope of the Pizza -> Clock boundary against log2(width), with a bootstrap interval
    (each width's runs resampled within cells). A width that stays Pizza-majority among Pizza
    and Clock runs up to the largest rate ('above') counts as a boundary at that rate (censored:
    the slope is then a lower bound); a width without a boundary otherwise is left out."""
    found = boundary_slope(runs, "d_model", n_boot, seed)
    return {"widths": found["points"]} | {k: found[k] for k in ("slope", "lo", "hi")}


def boundary_slope(runs: pd.DataFrame, axis: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """The slope of the Pizza -> Clock boundary against log2(axis) (width, p), its 95% bootstrap
    interval and the bootstrap slopes themselves (`samples`), by width_slope's rules."""
    rng = np.random.default_rng([seed, 2])
    values, points, boots = [], [], []
    for value, group in runs.groupby(axis, sort=True):
        pair = group[group["algorithm"].isin(["pizza", "clock"])]
        cells = boundary._cells(pair, "attn_rate", "pizza")
        if not cells:
            continue
        xs = np.array([c[0] for c in cells])
        at = boundary.first_crossing(xs, np.array([c[1].mean() for c in cells]))
        top = float(group["attn_rate"].max())
        if not np.isfinite(at):
            if np.mean(cells[-1][1]) < 0.5:
                continue  # Clock from the smallest rate on: no crossing to place
            at = top
        sample = boundary.bootstrap(cells, n_boot, rng)
        sample = np.where(np.isfinite(sample), sample, top)
        values.append(np.log2(value)), points.append(at), boots.append(sample)
    if len(values) < 2:
        return {"points": len(values), "slope": np.nan, "lo": np.nan, "hi": np.nan, "samples": np.full(n_boot, np.nan)}
    w = np.array(values)
    fit = lambda b: np.polyfit(w, b, 1)[0]
    slopes = np.array([fit(np.array([b[i] for b in boots])) for i in range(n_boot)])
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return {"points": len(values), "slope": float(fit(np.array(points))), "lo": float(lo), "hi": float(hi),
            "samples": slopes}


# ---------------------------------------------------------------- the p ladder

PAPER_P, PAPER_WIDTH = 59, 128  # the paper's configuration: d/p = 2.17


def ladder_series(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The p ladder's two series over p: the paper's width d = 128 at every p, and at every p the
    width nearest the paper's d/p (128/59), as cpu_p_ladder grids them."""
    ratio = PAPER_WIDTH / PAPER_P
    nearest = [g[g["d_model"] == min(g["d_model"].unique(), key=lambda d: abs(d / p - ratio))]
               for p, g in runs.groupby("p", sort=True)]
    return {f"d = {PAPER_WIDTH}": runs[runs["d_model"] == PAPER_WIDTH],
            f"d/p ~ {ratio:.2f}": pd.concat(nearest)}


def ladder_boundaries(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (p, d): `boundaries`' columns with p and d/p first."""
    parts = [boundaries(group, n_boot, seed).assign(p=p) for p, group in runs.groupby("p", sort=True)]
    table = pd.concat(parts, ignore_index=True)
    table.insert(1, "d/p", table["d_model"] / table["p"])
    return table[["p", *[c for c in table.columns if c != "p"]]].drop(columns="reference")


def ladder_points(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """ladder_boundaries' rows tagged with their series of ladder_series (a `series` column; the
    paper's (p, d) is in both): what plots.diagrams.boundary_over_p draws. The rows are the
    table's own, not estimated again on each series (the bootstrap's stream runs over a p's
    widths in turn, so a series alone would draw other intervals than `compare` prints), with the
    (p, d)'s smallest and largest attention rate: where a boundary 'below' or 'above' them lies."""
    rates = runs.groupby(["p", "d_model"])["attn_rate"].agg(["min", "max"])
    table = ladder_boundaries(runs, n_boot, seed).join(
        rates.set_axis(["lowest rate", "highest rate"], axis=1), on=["p", "d_model"])
    return pd.concat([table.merge(group[["p", "d_model"]].drop_duplicates(), on=["p", "d_model"]).assign(series=name)
                      for name, group in ladder_series(runs).items()], ignore_index=True)


def ladder_verdict(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Does the boundary follow p, d or d/p? Per series the slope of the boundary on log2(p) with
    its interval, and the difference of the two. Each reading predicts a zero: width alone, no
    slope at d = 128; d/p, none at fixed d/p; p alone, the same slope in both series (the
    difference 0). A reading is allowed when its zero lies in its 95% interval."""
    series = ladder_series(runs)
    slopes = {name: boundary_slope(group, "p", n_boot, seed) for name, group in series.items()}
    (fixed_d, a), (fixed_ratio, b) = slopes.items()
    diff = a["samples"] - b["samples"]
    finite = diff[np.isfinite(diff)]
    d_lo, d_hi = np.percentile(finite, [2.5, 97.5]) if finite.size else (np.nan, np.nan)
    rows = [{"series": name, "p values": found["points"], "slope per doubling of p": found["slope"],
             "95% lo": found["lo"], "95% hi": found["hi"]} for name, found in slopes.items()]
    rows.append({"series": "difference", "p values": min(a["points"], b["points"]),
                 "slope per doubling of p": a["slope"] - b["slope"], "95% lo": d_lo, "95% hi": d_hi})
    table = pd.DataFrame(rows)
    if not (np.isfinite(a["slope"]) and np.isfinite(b["slope"])):
        return table, "4. The p ladder: not resolvable: a boundary at fewer than 2 values of p in a series."
    contains = lambda lo, hi: lo - 1e-9 <= 0 <= hi + 1e-9  # a fit's rounding is no slope
    readings = {"width alone (no slope at d = 128)": contains(a["lo"], a["hi"]),
                f"d/p (no slope at {fixed_ratio})": contains(b["lo"], b["hi"]),
                "p alone (the same slope in both series)": contains(d_lo, d_hi)}
    allowed = [name for name, ok in readings.items() if ok]
    said = (f"slope on log2(p) {a['slope']:+.3f} [{a['lo']:+.3f}, {a['hi']:+.3f}] at {fixed_d}, "
            f"{b['slope']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}] at {fixed_ratio}, difference "
            f"{a['slope'] - b['slope']:+.3f} [{d_lo:+.3f}, {d_hi:+.3f}]")
    if len(allowed) == len(readings):
        verdict = "not resolvable with this many seeds: the intervals allow every reading"
    elif not allowed:
        verdict = "none of the three readings alone: every predicted zero lies outside its interval"
    else:
        verdict = "the intervals allow " + " and ".join(allowed) + "; they rule out " + " and ".join(
            name for name, ok in readings.items() if not ok)
    return table, f"4. The p ladder (does the boundary follow p, d or d/p?): {said}: {verdict}."


def verdicts(runs: pd.DataFrame, bounds: pd.DataFrame, slope: dict) -> list[str]:
    """The verdict on each finding, by explicit rules:
    1. the attention-rate transition, in two parts. Present: every width has a Pizza -> Clock
       crossing (Pizza among Pizza and Clock runs at the low rates, Clock at the high ones).
       Located: at d = 128 (else the width nearest it) the crossing's 95% interval overlaps
       the reference's 0.5-0.7: reproduced; an interval outside it, or no crossing: not
       reproduced; no interval (too few runs) or one wider than 0.5: not resolvable.
    2. wider models stay Pizza to higher rates: the slope of the boundary on log2(width) has a
       95% interval above 0: reproduced; below 0: contradicted; containing 0: not resolvable.
    A folder of one attention rate (e.g. the delay study) tests neither boundary: 1 and 3 say so."""
    widths = bounds["d_model"].to_numpy()
    rates = np.unique(runs["attn_rate"])
    near = widths[np.argmin(np.abs(np.log2(widths) - 7))]
    row = bounds.set_index("d_model").loc[near]
    lo, hi = row["95% lo"], row["95% hi"]
    crossing = bounds["status"] == "crossing"
    present = (f"present at every width ({', '.join(str(w) for w in widths)})" if crossing.all() else
               f"present at {crossing.sum()} of {len(widths)} widths (none at "
               f"{', '.join(str(w) for w in widths[~crossing.to_numpy()])})")
    if row["status"] != "crossing":
        first = f"not reproduced: at d = {near} no Pizza -> Clock crossing ({row['status']})"
    elif not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo > 0.5:
        first = (f"not resolvable with this many seeds: at d = {near} the boundary is {row['pizza -> clock']:.2f} "
                 f"but its 95% interval is {'not estimable' if not np.isfinite(lo) else f'[{lo:.2f}, {hi:.2f}]'}")
    elif hi >= REFERENCE_TRANSITION[0] and lo <= REFERENCE_TRANSITION[1]:
        first = (f"reproduced: at d = {near} the Pizza -> Clock boundary is {row['pizza -> clock']:.2f} "
                 f"[{lo:.2f}, {hi:.2f}], overlapping the reference's 0.5-0.7")
    else:
        first = (f"not reproduced: at d = {near} the Pizza -> Clock boundary is {row['pizza -> clock']:.2f} "
                 f"[{lo:.2f}, {hi:.2f}], outside the reference's 0.5-0.7")
    s, slo, shi = slope["slope"], slope["lo"], slope["hi"]
    if len(widths) == 1:
        second = f"not tested here: one width ({widths[0]}); a width sweep tests it"
    elif not np.isfinite(s):
        second = f"not resolvable: a boundary at {slope['widths']} width(s) only"
    elif slo > 0:
        second = f"reproduced: the boundary rises by {s:.3f} per doubling of width [{slo:.3f}, {shi:.3f}]"
    elif shi < 0:
        second = f"contradicted: the boundary falls by {-s:.3f} per doubling of width [{slo:.3f}, {shi:.3f}]"
    else:
        second = (f"not resolvable with this many seeds: slope {s:+.3f} per doubling of width, "
                  f"95% interval [{slo:+.3f}, {shi:+.3f}] contains 0")
    if len(rates) == 1:
        untested = f"not tested here: one attention rate ({rates[0]:g}); a sweep over attention rates tests it"
        return [f"1. The attention-rate transition: {untested}.",
                f"2. Wider models stay Pizza to higher rates: {second}.",
                f"3. The boundary by grad_sym alone: {untested}."]
    return [f"1. The attention-rate transition: {present}; its location {first}.",
            f"2. Wider models stay Pizza to higher rates: {second}.",
            f"3. {grad_sym_verdict(row, near)}"]


def grad_sym_verdict(row: pd.Series, width: int) -> str:
    """The boundary by grad_sym alone against the authors' table by the same rule (d = 128, or
    the width nearest it): reproduced when the 95% interval holds the reference's 0.70."""
    at, lo, hi = row["by grad_sym alone"], row["gs 95% lo"], row["gs 95% hi"]
    said = (f"The boundary by grad_sym alone (Pizza >= {GRAD_SYM_RULE['pizza_min_grad_sym']}, Clock <= "
            f"{GRAD_SYM_RULE['clock_max_grad_sym']}, test accuracy >= {GRAD_SYM_RULE['min_test_acc']}: "
            f"the estimator the authors' table allows, which crosses 1/2 near {REFERENCE_GRAD_SYM_CROSSING:.2f}; "
            f"the paper's 'between 0.5 and 0.7' is where grad_sym begins to fall)")
    if row["gs status"] != "crossing":
        return f"{said}: not reproduced: at d = {width} no crossing ({row['gs status']})."
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{said}: not resolvable: at d = {width} {at:.2f}, its interval not estimable."
    verdict = "reproduced" if lo <= REFERENCE_GRAD_SYM_CROSSING <= hi else "not reproduced"
    return f"{said}: {verdict}: at d = {width} {at:.2f} [{lo:.2f}, {hi:.2f}]."


def needed(runs: pd.DataFrame, slope: dict, manifest: dict | None) -> str:
    """Seeds (models) a run would need for the slope's interval to exclude 0 at the measured
    slope (the interval narrows as 1/sqrt(seeds)), and the time at this folder's measured rate."""
    s, lo, hi = slope["slope"], slope["lo"], slope["hi"]
    if not np.isfinite(s) or lo > 0 or hi < 0 or s == 0:
        return ""
    seeds = int(runs.groupby(["d_model", "attn_rate"]).size().median())
    factor = ((hi - lo) / 2 / abs(s)) ** 2
    need_seeds = int(np.ceil(seeds * factor))
    cells = runs.groupby(["d_model", "attn_rate"]).ngroups
    text = (f"At the measured slope, the interval would exclude 0 with about {need_seeds} seeds per cell "
            f"({need_seeds * cells} models on this grid, {factor:.1f}x this study's {len(runs)})")
    wall = _wall_seconds(manifest)
    if wall:
        text += f": about {wall * factor / 3600:.1f} h on the machine that ran this folder ({wall / 60:.0f} min here)"
    return text + "."


def _wall_seconds(manifest: dict | None) -> float | None:
    import datetime as dt
    try:
        start, end = (dt.datetime.fromisoformat(manifest[k]) for k in ("started", "finished"))
    except (TypeError, KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def _md(frame: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.3g}"
        return "" if v is None else str(v)
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)])


def combined(out_dir: Path, added=()) -> tuple[pd.DataFrame, list[str]]:
    """The runs of out_dir and of each added folder at out_dir's attention rates and steps (the
    same grid: a study reused, e.g. the p = 59 one in the p ladder), with a note per folder."""
    runs, notes = results.load(out_dir), []
    rates, steps = set(runs["attn_rate"].round(9)), set(runs["steps"])
    for folder in added:
        more = results.load(Path(folder))
        same = more[more["attn_rate"].round(9).isin(rates) & more["steps"].isin(steps)
                    & ~more["run_id"].isin(runs["run_id"])]
        notes.append(f"With {len(same)} runs of {folder} (p = {', '.join(str(v) for v in sorted(same['p'].unique()))}), "
                     f"those at this folder's attention rates and steps ({len(more) - len(same)} others left out).")
        runs = pd.concat([runs, same], ignore_index=True)
    return runs, notes


def compare(out_dir: Path, n_boot: int = 1000, added=()) -> str:
    """The whole comparison as Markdown. With several p (the p ladder, `added` folders included):
    the boundary per (p, d) and the p-ladder verdict first, then the comparison proper on the
    runs at the paper's p (or the p nearest it)."""
    out_dir = Path(out_dir)
    everything, notes = combined(out_dir, added)
    manifest = results.read_manifest(out_dir)
    ps = sorted(everything["p"].unique())
    paper_p = min(ps, key=lambda v: abs(v - PAPER_P))
    runs = everything[everything["p"] == paper_p]
    bounds = boundaries(runs, n_boot)
    slope = width_slope(runs, n_boot)
    steps = ", ".join(str(v) for v in sorted(everything["steps"].unique()))
    parts = [f"{len(everything)} runs, p = {', '.join(str(v) for v in ps)}, {steps} steps, widths "
             f"{', '.join(str(w) for w in sorted(everything['d_model'].unique()))} (the reference: p = 59, 20,000 steps).\n",
             *[note + "\n" for note in notes]]
    ladder = None
    if len(ps) > 1:
        ladder, said = ladder_verdict(everything, n_boot)
        parts += ["**Boundary per (p, d)** (as below, per p):\n", _md(ladder_boundaries(everything, n_boot)) + "\n",
                  "**The boundary's slope on log2(p)** per series (95% bootstrap intervals; each reading of "
                  "the p ladder predicts a zero: analysis in `ladder_verdict`):\n", _md(ladder) + "\n",
                  "**Convergence per p:**\n", _md(convergence(everything, by="p")) + "\n",
                  f"*From here on, the runs at p = {paper_p} only ({len(runs)}).*\n"]
        ladder = said
    parts += ["**Boundary per width** (Pizza -> Clock: the Pizza share among Pizza and Clock runs first below 1/2; "
              "95% bootstrap interval over seeds):\n", _md(bounds) + "\n",
              *([f"Slope of the boundary on log2(width): {slope['slope']:+.3f} per doubling, 95% interval "
                 f"[{slope['lo']:+.3f}, {slope['hi']:+.3f}] over {slope['widths']} widths.\n"]
                if runs["d_model"].nunique() > 1 else []),
              "**Per attention-rate bin, all widths** (reference, d = 128, circular runs, top-wrong DI: "
              + "; ".join(f"{b}: grad_sym {g}, dist_irr_top_wrong {d}" for b, (g, d) in REFERENCE_BINS.items()) + "):\n",
              _md(bins(runs)) + "\n"]
    for width, group in runs.groupby("d_model", sort=True):
        parts += [f"*d_model = {width}:*\n", _md(bins(group)) + "\n"]
    parts += ["**Convergence** (reference: " + "; ".join(f"{k} {v}" for k, v in REFERENCE_CONVERGENCE.items()) + "):\n",
              _md(convergence(runs)) + "\n", "**Verdicts**\n",
              "\n".join(verdicts(runs, bounds, slope) + ([ladder] if ladder else [])) + "\n"]
    more = needed(runs, slope, manifest)
    if more:
        parts.append(more + "\n")
    return "\n".join(parts)


def draw_ladder(out_dir: Path, path: Path, n_boot: int = 1000, added=()) -> str:
    """`report --paper --figure PATH`: the boundary against p (plots.diagrams.boundary_over_p) of
    the runs `compare` reads, saved to PATH; returns the line that says so."""
    from matplotlib import rc_context

    from ..plots.diagrams import boundary_over_p
    from ..plots.draw import save
    from ..plots.style import STYLE
    everything, _ = combined(Path(out_dir), added)
    if everything["p"].nunique() < 2:
        raise ConfigError([f"--figure: the boundary against p needs several p; {out_dir} (with --add) "
                           f"holds p = {', '.join(str(v) for v in sorted(everything['p'].unique()))}"])
    with rc_context(STYLE):
        fig = boundary_over_p(ladder_points(everything, n_boot))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path.parent, path.stem, [path.suffix[1:]])
    return f"phasescan.report: the boundary against p -> {path}"


def settling_report(out_dir: Path, candidates=None) -> str:
    """How many steps a study needs, from a folder's history (analysis.settling)."""
    from ..analysis import settling
    from ..store import history

    hist = history.load(Path(out_dir))
    runs = settling.per_run(hist)
    steps = np.unique(hist["step"])
    candidates = [int(s) for s in (candidates or steps[steps > 0]) if s in set(steps)]
    by = [c for c in ("d_model",) if c in runs]
    cols = ["label_settles"] + [f"{m}_settles" for m in settling.METRICS if f"{m}_settles" in runs]
    summary = runs.groupby(by)[cols].agg(["median", "max"]) if by else runs[cols].agg(["median", "max"])
    if by:
        summary.columns = [f"{a} {b}" for a, b in summary.columns]
        summary = summary.reset_index()
    else:
        summary = summary.T.reset_index()
    changed = settling.changed_share(hist, candidates)
    keep = ["run_id", *by, "attn_rate", "seed", "final_algorithm", *cols]
    return "\n".join([
        f"{len(runs)} runs, logged every {int(np.diff(steps)[0])} steps up to {int(steps[-1])}; a metric settles "
        f"when it stays within {settling.TOLERANCE} of its last value, the label when it stays the last label.\n",
        "**Settling steps per width** (median, max over runs):\n", _md(summary) + "\n",
        "**Runs whose label at N steps differs from their label at the last step:**\n", _md(changed) + "\n",
        "**Every run:**\n", _md(runs[[c for c in keep if c in runs]]) + "\n"])


def stability_report(out_dir: Path, other_dir: Path) -> str:
    """The labels of a sweep against the same sweep trained again (analysis.stability)."""
    from ..analysis import stability
    from ..analysis.table import swept_axes

    runs, other = results.load(Path(out_dir)), results.load(Path(other_dir))
    cell = [a for a in swept_axes(runs) if a != "seed"] or ["p"]
    cells = stability.compare(runs, other, cell)
    changed = stability.changed_runs(runs, other, cell)
    n, n_changed = int(cells["runs"].sum()), int(cells["changed"].sum())
    fragile = cells[cells["fragile"]]
    lines = [f"{n} runs in both folders ({out_dir} and {other_dir}); {n - n_changed} "
             f"({(n - n_changed) / n:.1%}) keep their label, {n_changed} change. A cell is fragile when "
             f"the runs that changed could decide its majority (analysis/stability.py).\n",
             f"**Fragile cells:** {len(fragile)} of {len(cells)}.\n"]
    if "d_model" in cell and len(cell) > 1:
        width = cells.groupby("d_model").apply(
            lambda g: pd.Series({"runs": g["runs"].sum(), "unchanged share": 1 - g["changed"].sum() / g["runs"].sum(),
                                 "fragile cells": int(g["fragile"].sum())}), include_groups=False).reset_index()
        lines += ["**Per width:**\n", _md(width) + "\n"]
    lines += ["**Per cell:**\n", _md(cells) + "\n"]
    if len(changed):
        lines += ["**Runs whose label changed:**\n", _md(changed) + "\n"]
    try:
        path = stability.record(out_dir, other_dir, runs, other)
        lines.append(f"Recorded in {path}: the phase diagram (`python -m phasescan.plot {out_dir}`, "
                     "`report --html`) outlines the fragile cells of its own axes.")
    except OSError as error:  # a read-only folder: the report stands, the figures cannot mark
        lines.append(f"Not recorded ({error.strerror or error}): the figures cannot mark the fragile cells.")
    return "\n".join(lines)
