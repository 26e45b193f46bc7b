"""The weights of results rows: the kept file, or the model trained again (deterministic) from its
row, one program per bucket as the sweep trained it. (The inspection figures need weights.)"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..engine.chunk import compile_chunk, run_chunk
from ..engine.train import Spec
from ..spec import grid
from ..spec.progress import Progress
from ..store import weights


def retrain(runs: list[dict], metric_opts: dict) -> list[dict[str, np.ndarray]]:
    """Train runs of one bucket again from their rows/config (deterministic), side by side in
    one program as the sweep trained them; return their weights."""
    compiled = compile_chunk(Spec.from_run(runs[0]), len(runs), metric_opts)
    _, params = run_chunk(compiled, runs, len(runs), keep_params=True)
    return [weights.to_arrays(weights.model_at(params, i), run) for i, run in enumerate(runs)]


RETRAINED = "retrained"  # out_dir/weights/retrained/: models trained again, kept apart from the sweep's own


def retrained_path(out_dir: Path, run_id: str) -> Path:
    return Path(out_dir) / weights.WEIGHTS_DIR / RETRAINED / f"{run_id}.npz"


def load_or_retrain(out_dir: Path, rows: list[dict], metric_opts: dict) -> list[dict[str, np.ndarray]]:
    """The weights of results rows: the saved file where the sweep kept it, or one trained again
    before; the others trained again, one program per bucket, with a progress bar (a paper-size
    model is 20,000 steps: minutes on a GPU, 13-18 minutes on a 2-core CPU), and kept in
    weights/retrained/ so it happens once. (Apart from the sweep's own weights: a model trained
    alone rounds like its chunk only to float32 precision; phasescan.load_model reads weights/.)"""
    kept = {}
    for row in rows:
        for path in (weights.path_of(out_dir, row["run_id"]), retrained_path(out_dir, row["run_id"])):
            if path.is_file():
                kept[row["run_id"]] = weights.load(path)
                break
    missing = [row for row in rows if row["run_id"] not in kept]
    if missing:
        print(f"phasescan: training {len(missing)} model(s) again whose weights were not kept "
              f"(save_weights); kept in {Path(out_dir) / weights.WEIGHTS_DIR / RETRAINED} for next time",
              file=sys.stderr)
        progress = Progress(len(missing), sum(run["steps"] for run in missing))
        for bucket in grid.buckets(missing).values():
            for run, arrays in zip(bucket, retrain(bucket, metric_opts)):
                kept[run["run_id"]] = arrays
                try:
                    weights.save(retrained_path(out_dir, run["run_id"]), arrays)
                except OSError:  # a read-only folder: the figure is still drawn
                    pass
            progress.advance(sum(run["steps"] for run in bucket))
            progress.models_done(len(bucket))
        progress.close()
    return [kept[row["run_id"]] for row in rows]
