"""`python -m phasescan.plot RESULTS_DIR [--x attn_rate] [--y d_model] [--formats png,pdf,svg]
[--runs ID,ID] [--circular-only] [--no-inspect]`: draw a sweep's figures into RESULTS_DIR/figures/.

  python -m phasescan.plot results/cpu/width_vs_attn --no-inspect
  python -m phasescan.plot results/cpu/learning_phases --x weight_decay --y init_scale --no-inspect

Figures (one file per figure and format):
  phase_diagram     each (y, x) cell coloured by its majority algorithm, with `k/n` (runs with it
                    / runs); the Pizza -> Clock boundary (boundary.estimate) and its 95% bootstrap
                    interval drawn on it (below MIN_CI_RUNS runs per cell the legend says n is too
                    small instead). With one y value: the share of each algorithm along x.
                    Dashed outlines: fragile cells, when `phasescan.report DIR --stability
                    OTHER_DIR` recorded a comparison (stability.parquet).
  metric_heatmaps   median gradient symmetricity and distance irrelevance per cell; cells where
                    no run learned are hatched, without a number.
  paper_scatter     the paper's views: x vs distance irrelevance, and x vs y, coloured by
                    gradient symmetricity (`--circular-only`: circularity >= 0.995 only).
  inspect_<run_id>  one model: its embedding on principal-component pairs (tokens labelled), the
                    gradient scatter (d logit_c / d E[a] vs d E[b] on the first PCs, y = x line),
                    and the correct-class logit over (a+b, a-b).
  boundary.csv      the boundary table (one row per y value).

Inspected runs: `--runs`, or automatically the most Clock-like and the most Pizza-like run. Their
weights come from RESULTS_DIR/weights/ when the sweep kept them (`save_weights=`), else the one
model is trained again from its row (a compilation: seconds to minutes). At the end of a sweep
(`plot=true`) only runs with saved weights are inspected, so the figures never retrain.
Axes other than x and y that the sweep varied are pooled; the titles say so, with their values.
"""
from __future__ import annotations

import argparse
import sys

from flax.errors import FlaxError

from .analysis import table
from .plots.diagrams import CIRCULAR_MIN
from .plots.draw import draw
from .core.config import ConfigError
from .store import results, weights


def first_sentence(error: Exception) -> str:
    """flax's message without its link to the docs."""
    return str(error).split(" (https://", 1)[0].strip().splitlines()[0].rstrip(".")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", help="a phasescan results folder (holds runs.parquet)")
    parser.add_argument("--x", help="the diagram's x axis, a swept field (default attn_rate)")
    parser.add_argument("--y", help="its y axis (default d_model)")
    parser.add_argument("axes", nargs="*", metavar="x=FIELD|y=FIELD", help=argparse.SUPPRESS)  # the older form
    parser.add_argument("--formats", default="png", help="comma-separated: png,pdf,svg")
    parser.add_argument("--runs", help="comma-separated run_ids to inspect (default: the most "
                        "Clock-like and the most Pizza-like run)")
    parser.add_argument("--circular-only", action="store_true",
                        help=f"scatter views: only runs with circularity >= {CIRCULAR_MIN}")
    parser.add_argument("--no-inspect", action="store_true", help="no single-model figures")
    args = parser.parse_args(argv)
    chosen = {"x": "attn_rate", "y": "d_model"}
    try:
        for item in args.axes:
            key, _, value = item.partition("=")
            if key not in chosen or not value:
                raise ConfigError(f"{item}: expected x=FIELD or y=FIELD")
            chosen[key] = value
        chosen |= {key: value for key, value in (("x", args.x), ("y", args.y)) if value}
        paths = draw(args.results_dir, chosen["x"], chosen["y"], args.formats.split(","),
                     args.runs.split(",") if args.runs else None, args.circular_only,
                     "none" if args.no_inspect else "auto")
    except ConfigError as error:
        for problem in error.problems:
            print(f"phasescan.plot: {problem}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"phasescan.plot: {error}", file=sys.stderr)
        return 2
    except weights.UnreadableWeights as error:  # a kept weights file, damaged outside phasescan
        print(f"phasescan.plot: cannot read {error}; delete it to train the model again, or "
              "leave the run out of --runs (--no-inspect: no single-model figures)", file=sys.stderr)
        return 2
    except FlaxError as error:  # kept weights whose shapes are not the run's (flax's shape check)
        print(f"phasescan.plot: the kept weights of {'a run' if not args.runs else args.runs} (in "
              f"{weights.path_of(args.results_dir, '<run_id>').parent}) do not fit the run's "
              f"config: {first_sentence(error)}; delete the file to train the model again, or "
              "--no-inspect", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only folder, a full disk: one line, the results untouched
        print(f"phasescan.plot: cannot write {error.filename or args.results_dir}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("phasescan.plot: interrupted; the results are untouched", file=sys.stderr)
        return 130
    frame = results.load(args.results_dir)
    print(table.format_table(frame, chosen["x"], chosen["y"]))
    if table.has_phases(frame):
        print(table.format_table(frame, chosen["x"], chosen["y"], label="learning_phase"))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
