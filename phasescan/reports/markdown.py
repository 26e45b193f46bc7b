"""A sweep's numbers in the form the paper reports them, as Markdown: per bin of an axis the
metric medians, class shares, circular shares and convergence facts; three transition
estimates with their intervals; the manifest line. `python -m phasescan.report` prints it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import boundary, table
from ..engine.train import FIT_LOSS
from ..plots.diagrams import CIRCULAR_MIN, interval_problem
from ..plots.style import pooled_values
from ..core.classify import ALGORITHMS, LEARNING_PHASES
from ..core.config import ConfigError
from ..store import results


def _iqr(values: pd.Series) -> str:
    q25, q50, q75 = values.quantile([0.25, 0.5, 0.75])
    return f"{q50:.3f} [{q25:.3f}, {q75:.3f}]"


def summary(runs: pd.DataFrame, by: str, min_circularity: float) -> pd.DataFrame:
    """One row per value of `by`: the per-bin figures described in the module docstring."""
    rows = []
    for value, group in runs.groupby(by, sort=True):
        row = {by: value, "runs": len(group)}
        if "circle_algorithms" in group:  # the per-circle comparison first (CIRCLE_NOTE)
            circles = [a for algs in group["circle_algorithms"] for a in algs if a in ("pizza", "clock")]
            row["pizza circles"] = f"{circles.count('pizza')}/{len(circles)}"
        row |= {"grad_sym": _iqr(group["grad_sym"]), "dist_irr": _iqr(group["dist_irr"])}
        if "dist_irr_top_wrong" in group:  # tables from before the column have only dist_irr
            row["dist_irr_top_wrong"] = _iqr(group["dist_irr_top_wrong"])
        row["circularity"] = _iqr(group["circularity"])
        shares = group["algorithm"].value_counts(normalize=True)
        row.update({name: f"{shares.get(name, 0.0):.2f}" for name in ALGORITHMS
                    if (runs["algorithm"] == name).any()})
        row[f"circ>={CIRCULAR_MIN}"] = f"{(group['circularity'] >= CIRCULAR_MIN).mean():.2f}"
        row[f"circ>={min_circularity}"] = f"{(group['circularity'] >= min_circularity).mean():.2f}"
        row["test_acc"] = f"{group['test_acc'].median():.3f}"
        # Convergence, to hold against the authors' (reference: loss 1.45e-7, norm 24.4)
        row["train_loss"] = f"{group['train_loss'].median():.3g}"
        row["param_norm"] = f"{group['param_norm'].median():.3g}"
        if "spike_loss" in group:  # loss above FIT_LOSS again after the run fit
            row["spiking"] = f"{(group['spike_loss'] > FIT_LOSS).mean():.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def dynamics(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of `by`: the share of each learning phase, the median memorize_step and
    generalize_step over the runs that reached them (with how many did) and the median
    generalization_delay."""
    rows = []
    for value, group in runs.groupby(by, sort=True):
        row = {by: value, "runs": len(group)}
        shares = group["learning_phase"].value_counts(normalize=True)
        row.update({name: f"{shares.get(name, 0.0):.2f}" for name in LEARNING_PHASES
                    if (runs["learning_phase"] == name).any()})
        for step in ("memorize_step", "generalize_step"):
            reached = group.loc[group[step] >= 0, step]
            row[step] = f"{reached.median():.0f} ({len(reached)})" if len(reached) else "never (0)"
        row["generalization_delay"] = f"{group['generalization_delay'].median():.3g}"
        rows.append(row)
    return pd.DataFrame(rows)


def joint_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per learning phase (rows) and algorithm (columns), with the row totals."""
    counts = table.joint_counts(runs)
    counts["runs"] = counts.sum(axis=1)
    return counts.rename_axis(index="learning_phase", columns=None).reset_index()


def transitions(runs: pd.DataFrame, by: str, y: str | None, pizza_min_grad_sym: float,
                n_boot: int = 1000) -> pd.DataFrame:
    """Where each of three shares first falls below 1/2 along `by` (boundary.estimate), and
    the Pizza -> Clock boundary among Pizza and Clock runs; for the Pizza share, the class that
    takes over at its crossing (`replaced_by`)."""
    frame = runs if y else runs.assign(_all="all")
    y = y or "_all"
    definitions = {
        "pizza share": frame["algorithm"],
        f"grad_sym >= {pizza_min_grad_sym} share": np.where(
            frame["grad_sym"] >= pizza_min_grad_sym, "symmetric", "asymmetric"),
        "non-clock share": np.where(frame["algorithm"] == "clock", "clock", "non_clock"),
    }
    labels = {"pizza share": "pizza"}
    out = []
    for name, column in definitions.items():
        label = labels.get(name, "symmetric" if "grad_sym" in name else "non_clock")
        est = boundary.estimate(frame.assign(algorithm=column), x=by, y=y, label=label, n_boot=n_boot)
        out.append(est.assign(share=name))
    # The Pizza -> Clock boundary proper: the Pizza share among the runs labelled Pizza or Clock.
    pair = boundary.estimate(frame, x=by, y=y, label="pizza", n_boot=n_boot, against="clock")
    out.append(pair.assign(share="pizza share of pizza + clock runs", boundary=pair["against_boundary"],
                           lo=pair["against_lo"], hi=pair["against_hi"], status=pair["against_status"],
                           runs_per_cell=pair["against_runs"], replaced_by="clock"))
    table = pd.concat(out, ignore_index=True)
    table.loc[table["share"] != "pizza share", "replaced_by"] = table["replaced_by"].where(
        table["share"] == "pizza share of pizza + clock runs")
    cols = ([] if y == "_all" else [y]) + ["share", "boundary", "lo", "hi", "status", "replaced_by", "runs_per_cell"]
    return table[cols]


def markdown(frame: pd.DataFrame) -> str:
    """A pandas frame as a GitHub Markdown table (no tabulate dependency)."""
    def text(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def pooled_axes(runs: pd.DataFrame, *kept: str | None) -> list[str]:
    """The swept axes (more than one value in the table) that a table keeping `kept` pools."""
    return [a for a in table.swept_axes(runs) if a not in kept]


def pooled_sentence(runs: pd.DataFrame, axes: list[str], hint: bool = True) -> str:
    """The sentence that says which swept axes a table puts together ("" when none)."""
    if not axes:
        return ""
    advice = " (--y AXIS: one table per value of AXIS)" if hint else ""
    return (f"Pooled over {pooled_values(runs, axes)}: every row puts the runs of all these "
            f"values together{advice}.")


def interval_note(found: pd.DataFrame) -> str:
    """Which rows of a boundary table have no real 95% interval (plots.diagrams.interval_problem), or ""."""
    notes = {}
    for _, r in found.iterrows():
        problem = interval_problem(r) if r["status"] == "crossing" else None
        if problem:  # rows named by their first column (the share, or the y value)
            notes.setdefault(problem, []).append(f"{found.columns[0]} {table.short(r.iloc[0])}"
                                                 if found.columns[0] != "share" else r.iloc[0])
    return "; ".join(f"{', '.join(rows)}: {what} ({why}), lo and hi are no interval"
                     for (what, why), rows in notes.items())


CIRCLE_NOTE = ("Per bin: `pizza circles` = the isolated circles (the strongest key frequencies of "
               "each model) judged Pizza among those judged Pizza or Clock: the per-circle comparison. "
               "The model-level clock_fve and pizza_fve are no such comparison: the two templates "
               "overlap, so both are high for any model that solved the task with circles "
               "(docs/metrics.md, Circles). Metrics: median [25%, 75%], the interquartile range.")
DYNAMICS_TEXT = ("Learning dynamics per {by}: the share of each learning phase, the median step of 90% "
                 "train (memorize_step) and test (generalize_step) accuracy over the runs that reached "
                 "it (how many did), the median generalization_delay (docs/metrics.md, Learning phases):")


@dataclasses.dataclass
class Numbers:
    """Everything the report says, computed once; `markdown_report` and `html_report` lay it out."""
    runs: pd.DataFrame
    by: str
    y: str | None
    pooled: list[str]  # swept axes the per-bin tables put together
    blocks: list[tuple[object, pd.DataFrame]]  # (y value or None, summary)
    transitions: pd.DataFrame
    dynamics: list[tuple[object, pd.DataFrame]]  # (y value or None, dynamics); [] before the dynamics
    joint: pd.DataFrame | None  # learning phase x algorithm; None before the dynamics
    manifest: dict | None
    config_text: str


def numbers(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> Numbers:
    runs = pd.read_parquet(out_dir / "runs.parquet")
    cfg = results.read_config(out_dir)
    thresholds = cfg.get("classify", {})
    for name in [by] + ([y] if y else []):
        if name not in runs:
            raise ConfigError([f"{name}: not a column of {out_dir / 'runs.parquet'}"])
    groups = runs.groupby(y, sort=True) if y else [(None, runs)]
    groups = list(groups)
    blocks = [(y_value, summary(group, by, thresholds.get("min_circularity", 0.6)))
              for y_value, group in groups]
    phases = table.has_phases(runs)
    dynamic_blocks = [(y_value, dynamics(group, by)) for y_value, group in groups] if phases else []
    manifest = results.read_manifest(out_dir)  # a damaged one: one line (ConfigError)
    config_path = out_dir / results.CONFIG
    config_text = config_path.read_text() if config_path.is_file() else ""
    return Numbers(runs, by, y, pooled_axes(runs, by, y), blocks,
                   transitions(runs, by, y, thresholds.get("pizza_min_grad_sym", 0.9)),
                   dynamic_blocks, joint_table(runs) if phases else None, manifest, config_text)


def manifest_line(n: Numbers) -> str:
    m = n.manifest
    precision = ", ".join(sorted(n.runs["precision"].astype(str).unique()))
    return (f"{m.get('n_done', len(n.runs))} runs on {m.get('device_count', '?')} x "
            f"{m.get('device_kind', '?')} ({m.get('platform', '?')}), precision {precision}, "
            f"wall {m.get('wall_s', float('nan')):.0f} s (compile "
            f"{sum(m.get('compile_s', {}).values()):.0f} s), jax "
            f"{m.get('packages', {}).get('jax', '?')}, {m.get('started', '?')}")


def report(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> str:
    """The Markdown report (what `python -m phasescan.report DIR` prints)."""
    n = numbers(out_dir, by, y)
    parts = [CIRCLE_NOTE + "\n"]
    if n.pooled:
        parts.append(pooled_sentence(n.runs, n.pooled) + "\n")
    for y_value, frame in n.blocks:
        if y:
            parts.append(f"**{y} = {y_value}**\n")
        parts.append(markdown(frame) + "\n")
    parts.append("Transition along " + by + " (first fall below 1/2, 95% bootstrap interval over seeds):\n")
    parts.append(markdown(n.transitions) + "\n")
    if interval_note(n.transitions):
        parts.append(interval_note(n.transitions) + ".\n")
    if n.joint is not None:
        parts.append(DYNAMICS_TEXT.format(by=by) + "\n")
        for y_value, frame in n.dynamics:
            if y:
                parts.append(f"**{y} = {y_value}**\n")
            parts.append(markdown(frame) + "\n")
        parts.append("Learning phase x algorithm (runs):\n")
        parts.append(markdown(n.joint) + "\n")
    if n.manifest is not None:
        parts.append(manifest_line(n))
    return "\n".join(parts)

