"""What a sweep will do, said before it trains (and all `dry_run=true` does): its runs, each
bucket's shape, chunks and memory estimate, and an estimated training time.

The time is measured, not modelled from nominal FLOP rates: every sweep records, per device kind
and count, the seconds its training took per unit of `shard.cost` (steps x examples x FLOPs per
example, the cost model that balances shards) in `rates.json` beside the compile cache
(~/.cache/phasescan/). The estimate is the total cost times the last rate seen on this device;
with none recorded yet it says so, and the bar's ETA appears after the first segment. Sweeps that
trained for less than MIN_RATE_S are not recorded (their fixed costs would dominate).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..engine.chunk import bytes_per_model, chunk_size_for, shared_bytes
from ..engine.train import Spec
from ..core import grid, shard
from ..core.config import COMPILE_CACHE_OFF
from ..store import results

RATES = "rates.json"
# A sweep that trained for less than this is not recorded: its seconds are mostly the fixed costs
# of a segment and of the final measurement, which would make the next large sweep look slow.
MIN_RATE_S = 30.0


def rates_path(cfg: dict) -> Path | None:
    """rates.json beside the compile cache folder (None with compile_cache=null: nothing kept)."""
    cache = cfg.get("compile_cache")
    return None if cache in COMPILE_CACHE_OFF else Path(str(cache)).expanduser().parent / RATES


def device_key(devices: list) -> str:
    return f"{devices[0].platform}:{devices[0].device_kind}:x{len(devices)}"


def read_rate(cfg: dict, devices: list) -> float | None:
    """Seconds of training per unit of shard.cost last measured on these devices, or None."""
    path = rates_path(cfg)
    try:
        return float(json.loads(path.read_text())[device_key(devices)]["s_per_cost"])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):  # none yet, or damaged
        return None


def record_rate(cfg: dict, devices: list, runs: list[dict], seconds: float) -> None:
    """Remember this sweep's training seconds per unit of cost (runs: those it trained). A
    record that cannot be written is skipped: it only feeds the next estimate."""
    path = rates_path(cfg)
    total = sum(map(shard.cost, runs))
    if path is None or not runs or seconds < MIN_RATE_S or not total:
        return
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[device_key(devices)] = {"s_per_cost": seconds / total, "runs": len(runs)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        results.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(known, indent=1)))
    except OSError:
        pass


def estimate_s(cfg: dict, devices: list, runs: list[dict]) -> float | None:
    """Seconds of training `runs` will take at the last rate measured on these devices (None: no
    rate yet)."""
    rate = read_rate(cfg, devices)
    return None if rate is None else rate * sum(map(shard.cost, runs))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# A training process's own memory beside its chunks' (the interpreter, JAX, XLA's compiler): a
# sweep of 2 models at p 11, d 8 peaked at 598 MiB resident on CPU; a margin on top.
PROCESS_BYTES = 768 * 2**20


def chunk_layout(plan) -> list[tuple]:
    """(Spec, models, chunk size, bytes per device) of each bucket of the plan's runs, the chunks
    sized from the bucket in the whole grid (as training sizes them)."""
    sweep, devices = plan.cfg["sweep"], list(plan.devices)
    whole = {key: len(b) for key, b in grid.buckets(list(plan.grid_runs)).items()}
    layout = []
    for bucket in grid.buckets(list(plan.runs)).values():
        spec = Spec.from_run(bucket[0])
        size = chunk_size_for(spec, whole[grid.bucket_key(bucket[0])], sweep["chunk_size"],
                              sweep["max_chunk_size"], len(devices))
        layout.append((spec, len(bucket), size, (size // len(devices)) * bytes_per_model(spec) + shared_bytes(spec)))
    return layout


def memory_need_gb(plan) -> int:
    """GiB of host memory that training the plan on CPU devices needs: its largest chunk (one
    at a time; every device's share is in host memory) and the process itself, rounded up."""
    chunks = max((memory * len(plan.devices) for *_, memory in chunk_layout(plan)), default=0)
    return math.ceil((chunks + PROCESS_BYTES) / 2**30)


def summary(plan, done_ids: frozenset = frozenset()) -> list[str]:
    """The plan as a few lines: runs, then one line per bucket, then the time estimate."""
    cfg, runs, devices = plan.cfg, list(plan.runs), list(plan.devices)
    sweep = cfg["sweep"]
    todo = [r for r in runs if r["run_id"] not in done_ids]
    model_steps = sum(r["steps"] for r in todo)
    head = f"plan: {len(runs)} runs" + (f" ({len(runs) - len(todo)} done already)" if len(todo) < len(runs) else "")
    if shard.shard_options(sweep)[1] > 1:
        head += f" (shard {sweep['shard']} of {sweep['num_shards']}, of {len(plan.grid_runs)} in the grid)"
    lines = [head + f", {model_steps:,} model-steps to train on {len(devices)} x {devices[0].device_kind}"]
    for spec, n_models, size, memory in chunk_layout(plan):
        lines.append(f"  bucket p={spec.p} d_model={spec.d_model} steps={spec.steps}: {n_models} models "
                     f"in {math.ceil(n_models / size)} chunk(s) of {size}, about "
                     f"{memory / 2**20:,.0f} MiB per device (estimate)")
    if shard.shard_options(sweep)[1] > 1:
        lines.append(f"  host memory: about {memory_need_gb(plan)} GiB on CPU devices, the largest chunk "
                     f"and the process (a CPU launcher's hydra.launcher.mem_gb must be at least this)")
    seconds = estimate_s(cfg, devices, todo)
    if seconds is None:
        lines.append("  time: not known yet on this device (no sweep recorded here); the bar's ETA "
                     "follows the first segment")
    else:
        lines.append(f"  time: about {duration(seconds)} of training (the last sweep's rate on this "
                     "device), plus compiling")
    return lines
