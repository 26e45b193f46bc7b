"""What train.precision changes in the science: grad_sym / dist_irr / labels per precision.

    python -m phasescan sweep=model_a_vs_b 'sweep.axes.precision=[float32,tf32,bfloat16]' \
        out_dir=results/precision
    python -m bench.precision_science results/precision

Prints, per precision and attention rate, the distribution of grad_sym and dist_irr (mean,
std, min, max over seeds) and the algorithm counts, and for every other precision the paired
difference to float32 (the same seed and attention rate, so the same initialisation and split).
"""
from __future__ import annotations

import sys

import pandas as pd

from phasescan import load

METRICS = ["grad_sym", "dist_irr"]


def compare(runs: pd.DataFrame, reference: str = "float32") -> dict[str, pd.DataFrame]:
    summary = runs.groupby(["precision", "attn_rate"])[METRICS].agg(["mean", "std", "min", "max"])
    labels = runs.groupby(["precision", "attn_rate"])["algorithm"].value_counts().unstack(fill_value=0)
    keyed = runs.set_index(["precision", "attn_rate", "seed"])[METRICS + ["test_acc"]]
    paired = {}
    present = set(runs["precision"])
    for name in sorted(present - {reference}) if reference in present else []:
        diff = (keyed.loc[name] - keyed.loc[reference]).abs()
        paired[name] = diff.groupby("attn_rate").agg(["mean", "max"])
    paired = pd.concat(paired, names=["precision"]) if paired else pd.DataFrame()
    return {"summary": summary, "labels": labels, "paired_abs_diff_vs_" + reference: paired}


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m bench.precision_science RESULTS_DIR")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        for title, table in compare(load(args[0])).items():
            print(f"\n{title}\n{table.to_string()}")


if __name__ == "__main__":
    main()
