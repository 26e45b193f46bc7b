"""Time-resolved phases: the metrics of every model every `train.log_every` steps.

The chunk runner measures each model at steps 0, K, 2K, ..., steps (chunk.run_chunk: the
steps between run on the device, segment by segment) and returns those measurements
(chunk.split_history separates them), shape (models, n_logged, ...). Here they become rows
(run_id, step, the metric columns of runs.parquet, algorithm by the same classification rule),
written durably per chunk next to the results chunks and assembled into history.parquet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import results

HISTORY = "history.parquet"
KIND = "history"  # chunk files chunks/history-<hash>.parquet (results chunks are chunk-<hash>)
COLUMNS = list(results.HISTORY_IDS) + results.METRIC_COLUMNS  # types: results.COLUMN_TYPES


def rows(runs: list[dict], logged: dict[str, np.ndarray], thresholds: dict) -> pd.DataFrame:
    """One row per (run, logged step), labelled by `classify` with the sweep's thresholds."""
    n_logged = next(iter(logged.values())).shape[1]
    frames = []
    for j in range(n_logged):
        at_step = {name: values[:, j] for name, values in logged.items()}
        frame = results.rows(runs, at_step, thresholds)
        frame.insert(1, "step", [j * r["log_every"] for r in runs])
        frames.append(frame[COLUMNS])
    return pd.concat(frames, ignore_index=True)


def write_chunk(out_dir: Path, frame: pd.DataFrame) -> Path:
    """Written atomically before the chunk's result rows, so a finished chunk has its history."""
    path = Path(out_dir) / results.CHUNKS / f"{KIND}-{results.chunk_name(dict.fromkeys(frame['run_id']))}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write_table(path, frame, KIND)
    return path


def read_chunks(out_dir: Path) -> pd.DataFrame | None:
    """The history rows of this sweep's runs (the manifest's run_ids), damaged or foreign files
    skipped and named on stderr, as results.read_chunks does for the result rows."""
    def foreign(frame, path, expected):
        ours = {"run_id", "step"} <= set(frame.columns) and (
            expected is None or set(frame["run_id"]) <= expected)
        return None if ours else "not a history chunk of this sweep"

    frames = results.chunk_frames(out_dir, KIND, foreign)
    if not frames:
        return None
    frame = results.conform(pd.concat(frames, ignore_index=True))
    return frame.drop_duplicates(["run_id", "step"]).sort_values(["run_id", "step"]).reset_index(drop=True)


def assemble(out_dir: Path, run_ids: set[str] | None = None) -> pd.DataFrame | None:
    """Write history.parquet from the history chunks (of `run_ids` only, when given: those of
    runs.parquet), atomically; None when nothing was logged."""
    frame = read_chunks(out_dir)
    if frame is not None and run_ids is not None:
        frame = frame[frame["run_id"].isin(run_ids)].reset_index(drop=True)
    if frame is not None:
        results.write_table(Path(out_dir) / HISTORY, frame, KIND)
    return frame


def load(path) -> pd.DataFrame:
    """history.parquet of a results folder joined with each run's fields from runs.parquet."""
    path = Path(path)
    frame = results.read_table(path / HISTORY) if (path / HISTORY).is_file() else read_chunks(path)
    if frame is None:
        raise FileNotFoundError(f"{path}: no {HISTORY} (run the sweep with train.log_every=K)")
    fields = results.load(path).drop(columns=results.METRIC_COLUMNS, errors="ignore")
    return frame.merge(fields, on="run_id", how="left")
