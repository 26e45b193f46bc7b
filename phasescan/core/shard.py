"""Splitting one sweep over several processes or machines: `sweep.num_shards=N sweep.shard=i`.

Shard i runs a deterministic 1/N of the grid, balanced by estimated training cost rather than by
count (a d = 512 model costs ~16x a d = 128 one), and writes its own results folder
`<out_dir>/shard-<i>-of-<N>/`. `python -m phasescan.merge <out_dir>` joins the shards.
"""
from __future__ import annotations

import heapq
from pathlib import Path

from . import grid
from .config import ConfigError, is_int


def cost(run: dict) -> int:
    """Relative training cost of one run: steps x examples per step x FLOPs per example.

    Per example and layer, two positions each pass through attention (4 d^2 weights) and the
    MLP (8 d^2 weights); the unembedding reads one position (d p). Full batch = all p^2 pairs
    (the training step evaluates every pair and masks). Constant factors cancel in the balance.
    """
    d, p = run["d_model"], run["p"]
    examples = p * p if run["batch_size"] is None else run["batch_size"]
    return run["steps"] * examples * (run["n_layers"] * 2 * 12 * d * d + d * p)


def shard_options(sweep: dict) -> tuple[int, int]:
    """(shard, num_shards), validated."""
    n, i = sweep.get("num_shards", 1), sweep.get("shard", 0)
    if not is_int(n) or n < 1:
        raise ConfigError(f"sweep.num_shards={n!r}: must be a positive integer (1 = no sharding)")
    if not is_int(i) or not 0 <= i < n:
        raise ConfigError(f"sweep.shard={i!r}: must be an integer in 0..{n - 1} (sweep.num_shards={n})")
    return i, n


def units(runs: list[dict], sweep: dict) -> list[list[dict]]:
    """What shards are made of. With an integer sweep.chunk_size, the unsharded sweep's chunks
    (grid.chunks, at one device per process): a shard trains exactly the chunks one process
    would, so the merged table is that process's bit for bit (the chunk layout decides a model's
    float rounding). With chunk_size=auto the chunks depend on each machine's memory, which the
    shards need not share: single runs, and each shard chunks its own."""
    size = sweep.get("chunk_size", "auto")
    if not is_int(size):
        return [[run] for run in runs]
    return grid.chunks(runs, lambda bucket: grid.even_chunk_size(len(bucket), int(size)))


def assign(units_: list[list[dict]], num_shards: int) -> list[int]:
    """The shard of every unit (units): greedy longest-processing-time first (costliest unit to
    the least-loaded shard; ties by grid order and lowest shard index), so it is deterministic."""
    weight = [sum(map(cost, unit)) for unit in units_]
    order = sorted(range(len(units_)), key=lambda k: -weight[k])  # stable: grid order on ties
    loads = [(0, s) for s in range(num_shards)]
    shard_of = [0] * len(units_)
    for k in order:
        load, s = heapq.heappop(loads)
        shard_of[k] = s
        heapq.heappush(loads, (load + weight[k], s))
    return shard_of


def shard_of_runs(runs: list[dict], sweep: dict) -> dict[str, int]:
    """run_id -> its shard, for every run of the grid."""
    _, n = shard_options(sweep)
    parts = units(runs, sweep)
    return {run["run_id"]: s for unit, s in zip(parts, assign(parts, n)) for run in unit}


def select(runs: list[dict], sweep: dict) -> list[dict]:
    """The runs of this process's shard, in grid order (all runs when num_shards = 1). A shard
    left with nothing (fewer chunks than shards) is refused, with the chunk size that fixes it."""
    i, n = shard_options(sweep)
    if n == 1:
        return runs
    shard_of = shard_of_runs(runs, sweep)
    mine = [run for run in runs if shard_of[run["run_id"]] == i]
    if runs and not mine:
        n_units = len(units(runs, sweep))
        raise ConfigError(f"sweep.shard={i}: nothing to train, the grid's {len(runs)} runs form "
                          f"{n_units} chunk{'s' * (n_units > 1)} (sweep.chunk_size={sweep.get('chunk_size')}) "
                          f"for {n} shards; choose sweep.num_shards <= {n_units} or a smaller "
                          "sweep.chunk_size (the same for an unsharded run to reproduce it)")
    return mine


def folder_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard}-of-{num_shards}"


def results_dir(out_dir: Path, sweep: dict) -> Path:
    """Where this process writes: out_dir itself, or out_dir/shard-<i>-of-<N>/ for a shard."""
    i, n = shard_options(sweep)
    return Path(out_dir) if n == 1 else Path(out_dir) / folder_name(i, n)
