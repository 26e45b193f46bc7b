"""`python -m phasescan.report RESULTS_DIR [--x attn_rate] [--y d_model] [--html]`: a sweep's numbers in the
form the paper reports them, as Markdown (docs/reproduction.md is made of its output).

  python -m phasescan.report results/cpu/width_vs_attn --y d_model
  python -m phasescan.report results/cpu/learning_phases --x weight_decay --html

Per value of `--x` (`--by`, its older name) (and of `--y` when it was swept): runs, grad_sym, dist_irr, dist_irr_top_wrong
and circularity median with their interquartile range, the share of each algorithm, the share of
circular models (the paper's circularity >= 0.995 filter, and the classifier's own threshold), the
median test accuracy, the convergence facts (median final training loss and parameter norm) and the
share of runs whose loss spiked after they fit (spike_loss > train.FIT_LOSS).
Then four estimates of where the transition sits along `--by`, each with a 95% bootstrap interval
over seeds (phasescan/analysis/boundary.py): where the Pizza share, the share of gradient-symmetric models
(grad_sym >= the Pizza threshold, whatever dist_irr says), the share of non-Clock models and the
Pizza share among the runs labelled Pizza or Clock (the Pizza -> Clock boundary proper) first fall
below one half; the Pizza share's row names the class that takes over (`replaced_by`). Last, the device, precision and wall time from the manifest. Swept axes that
a table puts together (all but `--by` and `--y`) are named first, with their values.

`--paper` prints the comparison with the paper (phasescan/reports/paper.py). With several p (the
p ladder; `--add OTHER_DIR` joins another folder's runs at this one's attention rates and steps,
e.g. the p = 59 study) it first gives the boundary per (p, d), its slope on log2(p) at d = 128 and
at d/p ~ 2.2, and which reading (p, d or d/p) the intervals allow; the rest on the runs at p = 59.

  python -m phasescan.report results/cpu/p_ladder --paper --add results/cpu/fixed_width_p59 --figure results/cpu/p_ladder/figures/boundary_over_p.png

`--figure PATH` (with --paper, several p) also draws that boundary against p, per series, by the
labels and by grad_sym alone.

`--stability OTHER_DIR` compares the labels with the same sweep trained again (another chunk
size, device count or CPU): the share unchanged per cell and width, and the fragile cells, whose
majority the runs that changed could decide (phasescan/analysis/stability.py).

`--html` writes RESULTS_DIR/report.html instead: one page that needs nothing else (figures as PNG
data URIs, the style sheet inline, no scripts, no links out) with the phase table, the boundary
tables, the sweep's figures (drawn afresh from runs.parquet; single-model, history and refinement
figures copied from RESULTS_DIR/figures/ when there), the per-bin metrics, convergence and loss
spikes, config.yaml and manifest.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .reports import paper
from .reports.html import REPORT_HTML, write_html
from .reports.markdown import report
from .core.config import ConfigError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.report",  # the summary and examples
                                     description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--x", "--by", dest="by", default="attn_rate",
                        help="the axis along which to bin (default attn_rate)")
    parser.add_argument("--y", default=None, help="a second axis: one block per value (e.g. d_model)")
    parser.add_argument("--html", action="store_true",
                        help=f"write RESULTS_DIR/{REPORT_HTML}: one self-contained page (figures, "
                             "tables, config, manifest) instead of printing Markdown")
    parser.add_argument("--paper", action="store_true",
                        help="print the comparison with the paper's reference figures instead (per width the "
                             "Pizza -> Clock boundary, per 0.1 attention-rate bin the medians and shares, "
                             "convergence, a verdict on each finding; docs/reproduction.md)")
    parser.add_argument("--add", type=Path, action="append", default=[], metavar="OTHER_DIR",
                        help="--paper: add OTHER_DIR's runs at RESULTS_DIR's attention rates and steps (a study "
                             "reused: e.g. the p = 59 one in the p ladder); repeatable")
    parser.add_argument("--figure", type=Path, default=None, metavar="PATH",
                        help="--paper with several p: also draw the boundary against p (both series, both "
                             "rules) into PATH (.png, .pdf or .svg)")
    parser.add_argument("--settling", action="store_true",
                        help="print when each model's label and metrics stop changing, from the folder's "
                             "history (a sweep run with train.log_every)")
    parser.add_argument("--stability", type=Path, default=None, metavar="OTHER_DIR",
                        help="print how many labels change against OTHER_DIR, the same sweep trained "
                             "again (another chunk size, device count or CPU), per cell, and which cells' "
                             "majority the changed runs could decide (fragile cells)")
    args = parser.parse_args(argv)
    for given, name in ((args.add, "--add"), (args.figure, "--figure")):
        if given and not args.paper:
            print(f"phasescan.report: {name} goes with --paper (the p ladder's comparison)", file=sys.stderr)
            return 2
    if args.figure is not None and args.figure.suffix not in (".png", ".pdf", ".svg"):
        print(f"phasescan.report: --figure {args.figure}: allowed .png, .pdf, .svg", file=sys.stderr)
        return 2
    for folder in (args.results_dir, args.stability, *args.add):
        if folder is not None and not (folder / "runs.parquet").exists():
            print(f"phasescan.report: no runs.parquet in {folder}", file=sys.stderr)
            return 2
    try:
        if args.stability is not None:
            print(paper.stability_report(args.results_dir, args.stability))
            return 0
        if args.paper or args.settling:
            if args.figure is not None:  # first: a folder of one p is refused before anything prints
                print(paper.draw_ladder(args.results_dir, args.figure, added=args.add), file=sys.stderr)
            print(paper.compare(args.results_dir, added=args.add) if args.paper
                  else paper.settling_report(args.results_dir))
            return 0
        if not args.html:
            print(report(args.results_dir, args.by, args.y))
            return 0
        try:
            path = write_html(args.results_dir, args.by, args.y)
        except OSError as error:  # a read-only folder, a full disk
            print(f"phasescan.report: cannot write {error.filename or args.results_dir}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return 1
        print(path)
    except ConfigError as err:
        for problem in err.problems:
            print(f"phasescan.report: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
