"""What training a chunk in segments costs: the same chunk trained with one device call for all
its steps (`sweep.segment_steps` = steps) and with segments of 500 and 100 steps (the host
advancing it between them), compilation excluded, best of `--repeats`, wall and process CPU.

    python -m bench.segment_overhead [OVERRIDES]        default: the demo's bucket (sweep=demo)
"""
from __future__ import annotations

import argparse
import time

from phasescan import grid
from phasescan.chunk import compile_chunk, run_chunk
from phasescan.config import compose
from phasescan.train import Spec


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.segment_overhead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segments", default="0,500,100", help="0 = all steps in one call")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = compose(*args.overrides)
    runs = list(grid.buckets(grid.expand(cfg)).values())[0]
    spec = Spec.from_run(runs[0])
    programs = {}
    for segment in (int(s) for s in args.segments.split(",")):
        programs[segment or spec.steps] = compile_chunk(spec, len(runs), cfg["metrics"],
                                                        segment=segment or spec.steps)
    best = {}
    for _ in range(args.repeats):
        for segment, program in programs.items():  # alternating, so drift hits all alike
            wall, cpu = time.perf_counter(), time.process_time()
            run_chunk(program, runs, len(runs))
            took = (time.perf_counter() - wall, time.process_time() - cpu)
            best[segment] = tuple(min(a, b) for a, b in zip(best.get(segment, took), took))
    one_call = best[spec.steps]
    print(f"{len(runs)} models, p={spec.p} d_model={spec.d_model} steps={spec.steps}; best of "
          f"{args.repeats}, compilation excluded")
    for segment, (wall, cpu) in best.items():
        print(f"segment {segment:>6} steps ({spec.steps // segment:>3} calls): wall {wall:7.2f} s "
              f"({100 * (wall / one_call[0] - 1):+.1f}%), CPU {cpu:7.2f} s "
              f"({100 * (cpu / one_call[1] - 1):+.1f}%)")


if __name__ == "__main__":
    main()
