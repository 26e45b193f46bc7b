"""`python -m phasescan.merge SWEEP_DIR`: join the shards of one sweep into SWEEP_DIR/runs.parquet.

The shards are the results folders under SWEEP_DIR (each has config.yaml and manifest.json,
written by `python -m phasescan ... sweep.num_shards=N sweep.shard=i`). The merge checks that they
belong to one sweep (same config apart from the shard index and settings that do not change
results), that every shard 0..N-1 is there exactly once, and that each holds exactly the runs the
grid assigns it. Then it writes SWEEP_DIR/runs.parquet, config.yaml and manifest.json, so
SWEEP_DIR reads like the folder of the same sweep run in one process. Nothing is written when
a check fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .plots.draw import draw
from .runner.merge_shards import MergeError, merge
from .core.config import ConfigError
from .store import results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.merge", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the folder holding the shards' results folders")
    args = parser.parse_args(argv)
    try:
        frame = merge(args.sweep_dir)
    except (MergeError, ConfigError) as error:
        print(f"phasescan.merge: {args.sweep_dir}: cannot merge:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if results.read_config(args.sweep_dir).get("plot", True):
        draw(args.sweep_dir, inspect="saved")  # the whole sweep's figures (never retrains: saved weights only)
    print(f"phasescan.merge: {len(frame)} runs -> {args.sweep_dir / results.RUNS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
