"""A chunk's training state on disk, so a stopped or killed sweep resumes inside the chunk.

out_dir/state/chunk-<hash>.npz holds the step reached, every leaf of the chunk's state (params,
AdamW state, the loss-spike and dynamics statistics; all models of the compiled chunk) and the history
measured so far; the hash names the chunk's run_ids and size, so only the same chunk, compiled
the same way, picks it up. Written atomically (results.write_atomic) between two segments, every
`sweep.checkpoint_every` seconds and when a stop is requested; removed once the chunk's rows are
written.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from .results import write_atomic

STATE_DIR = "state"
# The layout of the state's leaves (train.TrainState): 2 added the dynamics statistic. A file of
# another layout is not loaded (its leaves would not fit this program's state): the chunk starts
# over, and the next save replaces it.
STATE_FORMAT = 2


def path_of(out_dir: Path, run_ids: list[str], size: int) -> Path:
    name = hashlib.sha1(f"{','.join(run_ids)}|{size}".encode()).hexdigest()[:16]
    return Path(out_dir) / STATE_DIR / f"chunk-{name}.npz"


def save(path: Path, segment: int, step: int, leaves: list, logged: list[dict]) -> None:
    arrays = {"segment": np.int64(segment), "step": np.int64(step), "n_leaves": np.int64(len(leaves)),
              "n_logged": np.int64(len(logged)), "state_format": np.int64(STATE_FORMAT)}
    arrays |= {f"leaf.{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays |= {f"logged.{j}.{name}": np.asarray(v) for j, entry in enumerate(logged)
               for name, v in entry.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))


def load(path: Path) -> tuple[int, int, list, list[dict]] | None:
    """(segment, step, leaves, logged), or None when there is no usable file (a damaged one is skipped
    with a note: the chunk then starts over)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            layout = int(f["state_format"]) if "state_format" in f.files else 1
            if layout != STATE_FORMAT:
                print(f"phasescan: {path}: a checkpoint of state layout {layout} (an older "
                      f"phasescan; this one has {STATE_FORMAT}), the chunk starts over", file=sys.stderr)
                return None
            leaves = [f[f"leaf.{i}"] for i in range(int(f["n_leaves"]))]
            logged = [{} for _ in range(int(f["n_logged"]))]
            for key in f.files:
                if key.startswith("logged."):
                    _, j, name = key.split(".", 2)
                    logged[int(j)][name] = f[key]
            return int(f["segment"]), int(f["step"]), leaves, logged
    except Exception as error:  # damaged outside phasescan: numpy/zipfile raise several types
        print(f"phasescan: {path}: unreadable checkpoint, the chunk starts over ({error})",
              file=sys.stderr)
        return None


def off_grid(step: int, saved_segment: int, segment: int, log_every: int | None) -> str | None:
    """None if a program of `segment` steps per call can go on from a state saved at `step` by
    one of `saved_segment`, else why not. Segment length does not change the bits (each step is
    the same function of the state and its index); what it must keep is the history's grid: with
    train.log_every the next segments have to end on its steps."""
    if segment == saved_segment or not log_every or step % segment == 0:
        return None
    return (f"saved at step {step}, which is not on this sweep's segments of {segment} steps "
            f"(sweep.segment_steps; it was saved with {saved_segment}), so train.log_every={log_every}'s "
            "history steps would be missed")


def set_aside(path: Path) -> Path:
    """Rename a checkpoint this program cannot use (kept for a look, out of every chunk's way)."""
    aside = path.with_name(path.name + ".unusable")
    path.replace(aside)
    return aside


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
