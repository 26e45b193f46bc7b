"""The weights of results rows: the kept file, or the model trained again (deterministic) as its
sweep trained it: the chunk that holds its row, in one program of the sweep's size. On the CPU
that trained the sweep that gives the row's model bit for bit (a model trained alone rounds like
its chunk only to float32 precision, and thousands of steps amplify that: a label can change).
phasescan.load_model and the inspection figures open rows this way."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from ..engine.chunk import chunk_size_for, compile_chunk, run_chunk
from ..engine.train import Spec
from ..core import grid
from ..core.config import ConfigError
from ..core.progress import Progress
from ..store import results, weights


@dataclasses.dataclass
class ChunkPlan:
    """The runs one program of the sweep trained together (grid order), its compiled size, the
    sweep's program options, and `caveat`: why the layout is not exactly the sweep's (None: it is)."""
    runs: list[dict]
    size: int
    metric_opts: dict
    vmap_group: int | None
    segment: int | None
    caveat: str | None = None


def chunk_plan(out_dir: Path, run_id: str) -> ChunkPlan:
    """How the sweep of `out_dir` trained `run_id`: its chunk-mates from the chunk file holding
    its row, the program size from the recorded config and device count. ConfigError if the
    folder's config does not give the run."""
    out_dir = Path(out_dir)
    cfg = results.read_config(out_dir)
    runs = {run["run_id"]: run for run in grid.expand(cfg)}
    if run_id not in runs:
        raise ConfigError(f"run_id={run_id!r}: not a run of {out_dir / results.CONFIG}")
    bucket = grid.buckets(list(runs.values()))[grid.bucket_key(runs[run_id])]
    manifest = results.read_manifest(out_dir) or {}
    devices = int(manifest.get("devices_used") or 1)
    sweep = cfg["sweep"]
    spec = Spec.from_run(bucket[0])
    size = chunk_size_for(spec, len(bucket), sweep["chunk_size"], sweep["max_chunk_size"], devices)
    at = [run["run_id"] for run in bucket].index(run_id)
    planned = [run["run_id"] for run in bucket[at - at % size: at - at % size + size]]
    mates, caveats = planned, []
    for path in sorted((out_dir / results.CHUNKS).glob("chunk-*.parquet")):
        ids = pd.read_parquet(path, columns=["run_id"])["run_id"].tolist()
        if run_id in ids:
            mates = [i for i in planned if i in ids] + [i for i in ids if i not in planned]
            if sorted(ids) != sorted(planned):
                caveats.append(f"its chunk held {len(ids)} of the {len(planned)} runs the plan gives "
                               "(a chunk split after running out of memory, or refined): trained with those")
                size = len(ids)  # a split chunk was compiled at its own size
            break
    if devices > jax.local_device_count():
        caveats.append(f"the sweep split its chunks over {devices} devices, this process has "
                       f"{jax.local_device_count()}: trained on one, to float32 rounding of the row")
        devices = 1
    return ChunkPlan([runs[i] for i in mates], size,
                     cfg["metrics"] | {"learned_acc": cfg["classify"]["min_test_acc"]},
                     sweep.get("vmap_group"), sweep.get("segment_steps"), "; ".join(caveats) or None)


RETRAINED = "retrained"  # out_dir/weights/retrained/: models trained again, kept apart from the sweep's own


def retrained_path(out_dir: Path, run_id: str) -> Path:
    return Path(out_dir) / weights.WEIGHTS_DIR / RETRAINED / f"{run_id}.npz"


def kept_weights(out_dir: Path, run_id: str) -> dict[str, np.ndarray] | None:
    """The sweep's own file of run_id, or one trained again before (None: neither)."""
    for path in (weights.path_of(out_dir, run_id), retrained_path(out_dir, run_id)):
        if path.is_file():
            return weights.load(path)
    return None


def train_chunk_again(out_dir: Path, plan: ChunkPlan, progress: Progress | None = None) -> dict[str, dict]:
    """Train a ChunkPlan's runs as their sweep did; keep every one in weights/retrained/ (a
    read-only folder: not kept); {run_id: interchange arrays}."""
    program = compile_chunk(Spec.from_run(plan.runs[0]), plan.size, plan.metric_opts,
                            vmap_group=plan.vmap_group, segment=plan.segment)
    on_segment = (lambda step, done, state: progress.advance(done * len(plan.runs))) if progress else None
    _, params = run_chunk(program, plan.runs, plan.size, keep_params=True, on_segment=on_segment)
    out = {}
    for i, run in enumerate(plan.runs):
        out[run["run_id"]] = arrays = weights.to_arrays(weights.model_at(params, i), run)
        try:
            weights.save(retrained_path(out_dir, run["run_id"]), arrays)
        except OSError:
            pass
    return out


def load_or_retrain(out_dir: Path, run_ids: list[str]) -> list[dict[str, np.ndarray]]:
    """The weights of results rows: the saved file where the sweep kept it, or one trained again
    before; the others trained again with their chunks as the sweep trained them (chunk_plan),
    after a line that says so and how long it will take, with a progress bar (a paper-size chunk
    is 20,000 steps: minutes on a GPU, up to an hour on a 2-core CPU), and kept in
    weights/retrained/ so it happens once."""
    out_dir = Path(out_dir)
    kept = {run_id: kept_weights(out_dir, run_id) for run_id in run_ids}
    plans = {}
    for run_id in [r for r in run_ids if kept[r] is None]:
        if not any(run_id in (run["run_id"] for run in plan.runs) for plan in plans.values()):
            plans[run_id] = chunk_plan(out_dir, run_id)
    if plans:
        model_steps = sum(len(plan.runs) * plan.runs[0]["steps"] for plan in plans.values())
        print(f"phasescan: {sum(kept[r] is None for r in run_ids)} model(s) of {out_dir} without kept weights: "
              f"training {sum(len(p.runs) for p in plans.values())} again in their {len(plans)} chunk(s) as the "
              f"sweep did ({model_steps:,} model-steps{eta(out_dir, model_steps)}); kept in "
              f"{out_dir / weights.WEIGHTS_DIR / RETRAINED} for next time", file=sys.stderr)
        for plan in plans.values():
            if plan.caveat:
                print(f"phasescan: not the sweep's layout exactly: {plan.caveat}", file=sys.stderr)
        progress = Progress(sum(len(p.runs) for p in plans.values()), model_steps)
        for plan in plans.values():
            for run_id, arrays in train_chunk_again(out_dir, plan, progress).items():
                if run_id in kept and kept[run_id] is None:
                    kept[run_id] = arrays
            progress.models_done(len(plan.runs))
        progress.close()
    return [kept[run_id] for run_id in run_ids]


def eta(out_dir: Path, model_steps: int) -> str:
    """', about T' at the sweep's own rate (manifest wall_s over its model-steps), or ''."""
    manifest = results.read_manifest(out_dir) or {}
    table = results.read_chunks(out_dir, quiet=True)
    if not manifest.get("wall_s") or table is None or "steps" not in table:
        return ""
    seconds = manifest["wall_s"] * model_steps / float(table["steps"].sum())
    return f", about {seconds / 60:.0f} min at the sweep's rate" if seconds >= 60 else f", about {seconds:.0f} s"
