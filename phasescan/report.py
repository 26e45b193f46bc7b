"""`python -m phasescan.report RESULTS_DIR [--by attn_rate] [--y d_model]`: a sweep's numbers in the
form the paper reports them, as Markdown (docs/reproduction.md is made of its output).

Per value of `--by` (and of `--y` when it was swept): runs, grad_sym, dist_irr, dist_irr_top_wrong
and circularity median with their interquartile range, the share of each algorithm, the share of
circular models (the paper's circularity >= 0.995 filter, and the classifier's own threshold), the
median test accuracy, the convergence facts (median final training loss and parameter norm) and the
share of runs whose loss spiked after they fit (spike_loss > train.FIT_LOSS).
Then three estimates of where the transition sits along `--by`, each with a 95% bootstrap interval
over seeds (phasescan/boundary.py): where the Pizza share, the share of gradient-symmetric models
(grad_sym >= the Pizza threshold, whatever dist_irr says) and the share of non-Clock models first
fall below one half. Last, the device, precision and wall time from the manifest.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import boundary
from .classify import ALGORITHMS
from .config import ConfigError
from .plot import CIRCULAR_MIN, read_config
from .train import FIT_LOSS



def _iqr(values: pd.Series) -> str:
    q25, q50, q75 = values.quantile([0.25, 0.5, 0.75])
    return f"{q50:.3f} [{q25:.3f}, {q75:.3f}]"


def summary(runs: pd.DataFrame, by: str, min_circularity: float) -> pd.DataFrame:
    """One row per value of `by`: the per-bin figures described in the module docstring."""
    rows = []
    for value, group in runs.groupby(by, sort=True):
        row = {by: value, "runs": len(group), "grad_sym": _iqr(group["grad_sym"]),
               "dist_irr": _iqr(group["dist_irr"])}
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


def transitions(runs: pd.DataFrame, by: str, y: str | None, pizza_min_grad_sym: float,
                n_boot: int = 1000) -> pd.DataFrame:
    """Where each of three shares first falls below 1/2 along `by` (boundary.estimate)."""
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
    table = pd.concat(out, ignore_index=True)
    cols = ([] if y == "_all" else [y]) + ["share", "boundary", "lo", "hi", "status", "runs_per_cell"]
    return table[cols]


def markdown(frame: pd.DataFrame) -> str:
    """A pandas frame as a GitHub Markdown table (no tabulate dependency)."""
    def text(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def report(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> str:
    runs = pd.read_parquet(out_dir / "runs.parquet")
    cfg = read_config(out_dir)
    thresholds = cfg.get("classify", {})
    for name in [by] + ([y] if y else []):
        if name not in runs:
            raise ConfigError([f"{name}: not a column of {out_dir / 'runs.parquet'}"])
    parts = []
    groups = runs.groupby(y, sort=True) if y else [(None, runs)]
    for y_value, group in groups:
        if y:
            parts.append(f"**{y} = {y_value}**\n")
        parts.append(markdown(summary(group, by, thresholds.get("min_circularity", 0.6))) + "\n")
    parts.append("Transition along " + by + " (first fall below 1/2, 95% bootstrap interval over seeds):\n")
    parts.append(markdown(transitions(runs, by, y, thresholds.get("pizza_min_grad_sym", 0.9))) + "\n")
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        precision = ", ".join(sorted(runs["precision"].astype(str).unique()))
        parts.append(f"{m.get('n_done', len(runs))} runs on {m.get('device_count', '?')} x "
                     f"{m.get('device_kind', '?')} ({m.get('platform', '?')}), precision {precision}, "
                     f"wall {m.get('wall_s', float('nan')):.0f} s (compile "
                     f"{sum(m.get('compile_s', {}).values()):.0f} s), jax "
                     f"{m.get('packages', {}).get('jax', '?')}, {m.get('started', '?')}")
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.report", description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--by", default="attn_rate", help="the axis along which to bin (default attn_rate)")
    parser.add_argument("--y", default=None, help="a second axis: one block per value (e.g. d_model)")
    args = parser.parse_args(argv)
    if not (args.results_dir / "runs.parquet").exists():
        print(f"phasescan.report: no runs.parquet in {args.results_dir}", file=sys.stderr)
        return 2
    try:
        print(report(args.results_dir, args.by, args.y))
    except ConfigError as err:
        print(f"phasescan.report: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
