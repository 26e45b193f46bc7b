"""What `train.log_every` costs: XLA's FLOP count of one measurement against one training step,
and with --time the measured seconds of the first bucket as one chunk, without and with logging.

    python -m bench.logging_cost [--time] OVERRIDES      e.g. sweep=demo train.log_every=100
"""
from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp

from phasescan import grid
from phasescan.config import compose
from phasescan.chunk import compile_chunk, run_chunk
from phasescan.train import HParams, Spec, make_program


def logging_flops(spec, metric_opts: dict) -> dict:
    """XLA's FLOP count of one measurement and of one training step of one model: the Program's
    `measure`, and its `advance` over a segment of one step."""
    program = make_program(spec, 1, metric_opts)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    hp = HParams.abstract()
    state = jax.eval_shape(program.init, key, hp)

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    measure = flops(program.measure, state, hp)
    step = flops(program.advance, state, key, hp, jax.ShapeDtypeStruct((), jnp.int32))
    n_logged = spec.steps // spec.log_every + 1 if spec.log_every else 1
    return {"measure_flops": measure, "step_flops": step,
            "overhead": (n_logged - 1) * measure / (spec.steps * step + measure)}


def time_logging(cfg: dict, repeats: int = 2) -> dict:
    """Seconds (wall and process CPU) to train the sweep's first bucket as one chunk, without and
    with logging, the two programs alternating `repeats` times (compilation excluded; best of)."""

    runs = list(grid.buckets(grid.expand(cfg)).values())[0]
    spec = Spec.from_run(runs[0])
    programs = {name: compile_chunk(dataclasses.replace(spec, log_every=k), len(runs), cfg["metrics"])
                for name, k in (("plain", None), ("logged", spec.log_every))}
    best = {}
    for _ in range(repeats):
        for name, compiled in programs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run_chunk(compiled, runs, len(runs))
            took = (time.perf_counter() - wall, time.process_time() - cpu)
            best[name] = tuple(min(a, b) for a, b in zip(best.get(name, took), took))
    return {"models": len(runs)} | {f"{name}_{kind}_s": round(t[i], 3)
                                    for name, t in best.items() for i, kind in enumerate(("wall", "cpu"))}


if __name__ == "__main__":
    timed = "--time" in sys.argv
    cfg = compose(*[a for a in sys.argv[1:] if a != "--time"])
    spec = Spec.from_run(grid.expand(cfg)[0])
    cost = logging_flops(spec, cfg["metrics"])
    print(f"{spec}\none measurement: {cost['measure_flops']:.4g} FLOPs, one training step: "
          f"{cost['step_flops']:.4g} FLOPs (ratio {cost['measure_flops'] / cost['step_flops']:.3g}); "
          f"logging every {spec.log_every} steps adds {100 * cost['overhead']:.2f}% to the FLOPs")
    if timed:
        print(time_logging(cfg))
