"""Time-resolved phases: the metrics of every model every `train.log_every` steps.

The training program measures each model at steps 0, K, 2K, ..., steps (train.make_train, an
outer scan over segments of K steps, no host round-trip per step) and returns those measurements
in its metrics dict under `PREFIX + name`, shape (models, n_logged, ...). Here they become rows
(run_id, step, the metric columns of runs.parquet, algorithm by the same classification rule),
written durably per chunk next to the results chunks and assembled into history.parquet.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from . import results
from .classify import classify

PREFIX = "history/"
HISTORY = "history.parquet"
KIND = "history"  # chunk files chunks/history-<hash>.parquet (results chunks are chunk-<hash>)
COLUMNS = ["run_id", "step"] + results.METRIC_COLUMNS


def split(metrics: dict) -> tuple[dict, dict]:
    """A chunk's metrics -> (final metrics, history metrics with PREFIX removed; {} if none)."""
    final = {k: v for k, v in metrics.items() if not k.startswith(PREFIX)}
    logged = {k[len(PREFIX):]: v for k, v in metrics.items() if k.startswith(PREFIX)}
    return final, logged


def rows(runs: list[dict], logged: dict[str, np.ndarray], thresholds: dict) -> pd.DataFrame:
    """One row per (run, logged step), labelled by `classify` with the sweep's thresholds."""
    n_logged = next(iter(logged.values())).shape[1]
    frames = []
    for j in range(n_logged):
        at_step = {name: values[:, j] for name, values in logged.items()}
        frame = results.rows(runs, at_step, classify(at_step, thresholds))
        frame.insert(1, "step", [j * r["log_every"] for r in runs])
        frames.append(frame[COLUMNS])
    return pd.concat(frames, ignore_index=True)


def write_chunk(out_dir: Path, frame: pd.DataFrame) -> Path:
    """Written atomically before the chunk's result rows, so a finished chunk has its history."""
    ids = ",".join(dict.fromkeys(frame["run_id"]))
    path = Path(out_dir) / results.CHUNKS / f"{KIND}-{hashlib.sha1(ids.encode()).hexdigest()[:16]}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def read_chunks(out_dir: Path) -> pd.DataFrame | None:
    files = sorted((Path(out_dir) / results.CHUNKS).glob(f"{KIND}-*.parquet"))
    if not files:
        return None
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates(["run_id", "step"]).sort_values(["run_id", "step"]).reset_index(drop=True)


def assemble(out_dir: Path) -> pd.DataFrame | None:
    """Write history.parquet from the history chunks (atomically); None when nothing was logged."""
    frame = read_chunks(out_dir)
    if frame is not None:
        results.write_atomic(Path(out_dir) / HISTORY, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def load(path) -> pd.DataFrame:
    """history.parquet of a results folder joined with each run's fields from runs.parquet."""
    path = Path(path)
    frame = pd.read_parquet(path / HISTORY) if (path / HISTORY).is_file() else read_chunks(path)
    if frame is None:
        raise FileNotFoundError(f"{path}: no {HISTORY} (run the sweep with train.log_every=K)")
    fields = results.load(path).drop(columns=results.METRIC_COLUMNS, errors="ignore")
    return frame.merge(fields, on="run_id", how="left")


def logging_flops(spec, metric_opts: dict) -> dict:
    """XLA's FLOP count of one measurement and of one training step of one model.

    XLA's cost analysis counts a loop body once, whatever its trip count, so the program without
    logging counts init + one step + one measurement, and the program with logging counts one
    more measurement (the one before the first segment): their difference is one measurement.
    """
    import dataclasses

    import jax
    import jax.numpy as jnp

    from .train import HParams, make_train

    def flops(log_every):
        train = make_train(dataclasses.replace(spec, log_every=log_every),
                           n_triples=metric_opts["grad_sym_triples"],
                           triples_seed=metric_opts["triples_seed"],
                           key_freq_min_share=metric_opts["key_freq_min_share"])
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        hp = HParams(**{n: jax.ShapeDtypeStruct((), jnp.uint32 if n == "split_seed" else jnp.float32)
                        for n in HParams._fields})
        cost = jax.jit(train).lower(key, hp).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    plain, logged = flops(None), flops(spec.log_every or spec.steps)
    measure = logged - plain
    step = plain - measure  # includes the (small) initialisation
    n_logged = spec.steps // spec.log_every + 1 if spec.log_every else 1
    return {"measure_flops": measure, "step_flops": step,
            "overhead": (n_logged - 1) * measure / (spec.steps * step + measure)}


def time_logging(cfg: dict, repeats: int = 2) -> dict:
    """Seconds (wall and process CPU) to train the sweep's first bucket as one chunk, without and
    with logging, the two programs alternating `repeats` times (compilation excluded; best of)."""
    import dataclasses
    import time

    from . import grid
    from .sweep import compile_chunk, run_chunk
    from .train import Spec

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
    # python -m phasescan.history [--time] [overrides]: the FLOP cost of logging (XLA's count);
    # with --time also the measured seconds of the first bucket without and with logging.
    import sys

    from . import grid
    from .config import compose
    from .train import Spec

    timed = "--time" in sys.argv
    cfg = compose(*[a for a in sys.argv[1:] if a != "--time"])
    spec = Spec.from_run(grid.expand(cfg)[0])
    cost = logging_flops(spec, cfg["metrics"])
    print(f"{spec}\none measurement: {cost['measure_flops']:.4g} FLOPs, one training step: "
          f"{cost['step_flops']:.4g} FLOPs (ratio {cost['measure_flops'] / cost['step_flops']:.3g}); "
          f"logging every {spec.log_every} steps adds {100 * cost['overhead']:.2f}% to the FLOPs")
    if timed:
        print(time_logging(cfg))
