"""Splitting one sweep over several processes or machines: `sweep.num_shards=N sweep.shard=i`.

Shard i runs a deterministic 1/N of the grid, balanced by estimated training cost rather than by
count (a d = 512 model costs ~16x a d = 128 one), and writes its own results folder
`<out_dir>/shard-<i>-of-<N>/`. `python -m phasescan.merge <out_dir>` joins the shards.
"""
from __future__ import annotations

import heapq
from pathlib import Path

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


def assign(runs: list[dict], num_shards: int) -> list[int]:
    """The shard of every run: greedy longest-processing-time first (costliest run to the
    least-loaded shard; ties by grid order and lowest shard index), so it is deterministic."""
    order = sorted(range(len(runs)), key=lambda k: -cost(runs[k]))  # stable: grid order on ties
    loads = [(0, s) for s in range(num_shards)]
    shard_of = [0] * len(runs)
    for k in order:
        load, s = heapq.heappop(loads)
        shard_of[k] = s
        heapq.heappush(loads, (load + cost(runs[k]), s))
    return shard_of


def select(runs: list[dict], sweep: dict) -> list[dict]:
    """The runs of this process's shard, in grid order (all runs when num_shards = 1)."""
    i, n = shard_options(sweep)
    if n == 1:
        return runs
    return [run for run, s in zip(runs, assign(runs, n)) if s == i]


def folder_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard}-of-{num_shards}"


def results_dir(out_dir: Path, sweep: dict) -> Path:
    """Where this process writes: out_dir itself, or out_dir/shard-<i>-of-<N>/ for a shard."""
    i, n = shard_options(sweep)
    return Path(out_dir) if n == 1 else Path(out_dir) / folder_name(i, n)
