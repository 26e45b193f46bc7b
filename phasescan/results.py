"""Where rows are written and read: chunk files, runs.parquet, config.yaml, manifest.json.

Layout of a results folder:
  runs.parquet      one row per model (assembled from chunks/, written atomically)
  chunks/*.parquet  the rows of each finished chunk, each written atomically (tmp + rename)
  config.yaml       the resolved configuration
  manifest.json     versions, device, git commit, timings
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .classify import circle_algorithms, classify
from .config import FIELDS, ConfigError

RUNS = "runs.parquet"
LOCK = ".phasescan.lock"  # held by the process writing the folder (results.locked)
CHUNKS = "chunks"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"

# Columns every runs.parquet has, in this order (then any other metric columns).
ID_COLUMNS = ["run_id", "run_index", "seed", "data_seed"]
FIELD_COLUMNS = list(FIELDS)
METRIC_COLUMNS = ["train_loss", "test_loss", "loss", "train_acc", "test_acc", "acc", "grad_sym",
                  "dist_irr", "dist_irr_top_wrong", "circularity", "key_freqs", "n_key_freqs",
                  "clock_fve", "pizza_fve", "circle_freqs", "circle_clock_fve", "circle_pizza_fve",
                  "circle_algorithms", "n_clock_circles", "n_pizza_circles", "param_norm",
                  "fit_step", "spike_loss", "spike_step", "diverged", "algorithm"]
assert not set(FIELD_COLUMNS) & set(METRIC_COLUMNS), "a field and a metric would share a column"


def rows(runs: list[dict], metrics: dict[str, np.ndarray], thresholds: dict) -> pd.DataFrame:
    """One row per run: its identity, every field, its metrics (host numpy arrays) and its
    labels by the classification rule with `thresholds`."""
    table = {col: [r[col] for r in runs] for col in ID_COLUMNS + FIELD_COLUMNS}
    table["refine_round"] = [r.get("refine_round", 0) for r in runs]  # 0: the grid; phasescan/refine.py
    return pd.DataFrame(table | metric_columns(metrics, thresholds))


def metric_columns(metrics: dict[str, np.ndarray], thresholds: dict) -> dict[str, list]:
    """The METRIC_COLUMNS of models measured by metrics.evaluate (leading axis = model), lists
    and labels derived, in column order (those the measurement has: a single model measured by
    `phasescan.evaluate` has no training history, so no loss-spike columns)."""
    n = len(np.asarray(metrics["grad_sym"]))
    key_freqs = [key_freq_list(share, mask)
                 for share, mask in zip(metrics["freq_share"], metrics["key_freq_mask"])]
    # The circles a model has and that were measured (additive tasks only), strongest first
    present = (np.asarray(metrics["circle_freq"]) > 0) & ~np.isnan(np.asarray(metrics["circle_clock_fve"]))
    circles = circle_algorithms(metrics["circle_clock_fve"], metrics["circle_pizza_fve"], thresholds)
    derived = {
        "key_freqs": key_freqs, "n_key_freqs": [len(k) for k in key_freqs],
        "circle_freqs": [np.asarray(metrics["circle_freq"])[i][present[i]].tolist() for i in range(n)],
        "circle_algorithms": [circles[i][present[i]].tolist() for i in range(n)],
        "n_clock_circles": (circles == "clock").sum(axis=1).tolist(),
        "n_pizza_circles": (circles == "pizza").sum(axis=1).tolist(),
        "algorithm": list(classify(metrics, thresholds)),
    }
    for name in ("circle_clock_fve", "circle_pizza_fve"):
        derived[name] = [np.asarray(metrics[name])[i][present[i]].tolist() for i in range(n)]
    return {name: derived[name] if name in derived else np.asarray(metrics[name]).tolist()
            for name in METRIC_COLUMNS if name in derived or name in metrics}


def key_freq_list(share: np.ndarray, mask: np.ndarray) -> list[int]:
    """The key frequencies (1-based) of one model, strongest first."""
    ks = np.flatnonzero(mask)
    return [int(k) + 1 for k in ks[np.argsort(-share[ks], kind="stable")]]


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file. The data
    reaches the disk (fsync) before the rename, and the rename before we return."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(path: Path) -> bool:
    """A file write_atomic has not finished (".<name>.tmp-<pid>"), or the folder's lock: never
    a result."""
    return path.name == LOCK or path.name.startswith(".") and ".tmp-" in path.name


@contextlib.contextmanager
def locked(out_dir: Path):
    """Hold an advisory lock on out_dir while a sweep writes there: a second process started on
    the same folder is refused, told who holds it, and writes nothing (the lock goes with the
    process, so a killed sweep leaves none behind)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / LOCK, "a+")
    except OSError as error:
        raise ConfigError(f"out_dir={out_dir}: cannot write there ({error.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"out_dir={out_dir}: another phasescan is writing here ({holder}); "
                          "nothing was changed. Wait for it to finish, or choose another out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {platform.node()}, since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def write_chunk(out_dir: Path, frame: pd.DataFrame) -> Path:
    path = Path(out_dir) / CHUNKS / f"chunk-{chunk_name(frame['run_id'])}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def chunk_name(run_ids) -> str:
    """A chunk file's name: the hash of its run_ids, so a file is known by what it holds."""
    return hashlib.sha1(",".join(run_ids).encode()).hexdigest()[:16]


def foreign(frame: pd.DataFrame, path: Path, expected: set | None) -> str | None:
    """Why a readable parquet in chunks/ is not one of this sweep's chunks (None: it is)."""
    if not set(ID_COLUMNS + ["algorithm"]) <= set(frame.columns) or frame.empty:
        return "not a phasescan chunk (its columns are not a runs table's)"
    if path.stem.split("-", 1)[-1] != chunk_name(frame["run_id"]):
        return "its name does not match its runs (not written by phasescan as it is)"
    if expected is not None and not set(frame["run_id"]) <= expected:
        return "runs of another sweep"
    return None


def chunk_frames(out_dir: Path, kind: str, why_foreign, quiet: bool = False) -> list[pd.DataFrame]:
    """The readable files `chunks/<kind>-*.parquet` of this sweep: a damaged one, or one that
    `why_foreign(frame, path, expected run_ids)` rejects (the manifest lists the sweep's
    run_ids), is skipped and named on stderr (unless `quiet`: said once already)."""
    manifest = read_manifest(out_dir) if (Path(out_dir) / MANIFEST).is_file() else None
    expected = set(manifest["run_ids"]) if manifest and "run_ids" in manifest else None
    frames = []
    for f in sorted((Path(out_dir) / CHUNKS).glob(f"{kind}-*.parquet")):
        try:
            frame = pd.read_parquet(f)
            why = why_foreign(frame, f, expected)
        except Exception as error:  # pyarrow raises several types for a damaged file
            why = f"unreadable, skipped: its runs count as not done ({type(error).__name__})"
        else:
            why = why and f"skipped, {why}"
        if why and not quiet:
            print(f"phasescan: {f}: {why}", file=sys.stderr)
        elif not why:
            frames.append(frame)
    return frames


def read_chunks(out_dir: Path, quiet: bool = False) -> pd.DataFrame | None:
    """This sweep's finished chunks' rows, each run once (None if there are none). A damaged
    file or one that is not the sweep's (another sweep's, a stray parquet) is skipped and named
    (chunk_frames): its runs count as not done, and nothing foreign enters the table."""
    frames = chunk_frames(out_dir, "chunk", foreign, quiet)
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates("run_id").sort_values("run_index").reset_index(drop=True)


def assemble(out_dir: Path) -> pd.DataFrame:
    """Write runs.parquet from every finished chunk, atomically; return the table."""
    frame = read_chunks(out_dir, quiet=True)  # skipped files were named when the sweep began
    write_atomic(Path(out_dir) / RUNS, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def load(path) -> pd.DataFrame:
    """Read a results folder (or a runs.parquet file) into a DataFrame.

    A folder whose sweep is still running or was interrupted is read from its finished chunks,
    with a note on stderr saying how many runs are done.
    """
    path = Path(path)
    if path.is_file():
        return pd.read_parquet(path)
    if (path / RUNS).is_file():
        try:
            return pd.read_parquet(path / RUNS)
        except Exception as error:  # damaged outside phasescan: the chunks hold the same rows
            print(f"phasescan: {path / RUNS}: unreadable ({type(error).__name__}); reading the "
                  f"finished chunks instead", file=sys.stderr)
    frame = read_chunks(path)
    total = "?"
    if (path / MANIFEST).is_file():
        total = json.loads((path / MANIFEST).read_text()).get("n_runs", "?")
    if frame is None:
        if total != "?":
            raise FileNotFoundError(f"{path}: sweep started, no results yet (0 of {total} runs done)")
        raise FileNotFoundError(f"{path}: no phasescan results here (no {RUNS} and no {CHUNKS}/)")
    print(f"phasescan: {path}: sweep unfinished, {len(frame)} of {total} runs done", file=sys.stderr)
    return frame


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Package versions and the device, for the manifest."""
    import jax

    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow", "hydra-core"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "packages": versions,
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "host": platform.node(),
        "git_commit": git_commit(),
    }


def write_manifest(out_dir: Path, manifest: dict) -> None:
    write_atomic(Path(out_dir) / MANIFEST,
                 lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n"))


def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
