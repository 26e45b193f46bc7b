"""Where rows are written and read: chunk files, runs.parquet, config.yaml, manifest.json.

Layout of a results folder:
  runs.parquet      one row per model (assembled from chunks/, written atomically)
  chunks/*.parquet  the rows of each finished chunk, each written atomically (tmp + rename)
  config.yaml       the resolved configuration
  manifest.json     versions, device, git commit, timings

Every Parquet file phasescan writes here (and history.parquet) has an explicit schema, one type
per column whatever its values (an unset nullable field is an int64 column of nulls, not Arrow's
type `null`), derived from the field registry (config.FIELDS) and the column registries below;
its key-value metadata holds SCHEMA_VERSION and phasescan's version. docs/columns.md lists the
columns.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import glob
import json
import logging
import os
import re
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.classify import ALGORITHMS, LEARNING_PHASES, circle_algorithms, classify, learning_phase
from ..core.config import FIELDS, ConfigError
from ..core.version import __version__

log = logging.getLogger("phasescan")

RUNS = "runs.parquet"
LOCK = ".phasescan.lock"  # held by the process writing the folder (results.locked)
CHUNKS = "chunks"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"

# The schema's version: bump it when a column of runs.parquet or history.parquet is added,
# removed, renamed or changes type (and say so in docs/columns.md).
SCHEMA_VERSION = 3  # 2: init_scale, dynamics_every, the dynamics columns and learning_phase; 3: forward
META_SCHEMA_VERSION = b"phasescan.schema_version"  # Parquet key-value metadata keys
META_VERSION = b"phasescan.version"
META_TABLE = b"phasescan.table"  # runs | history

# Column types: name -> (Arrow type, pandas dtype). Integer columns that may hold nulls (the
# nullable fields) are pandas "Int64"; `algorithm` is a category with every class of the rule,
# in classify.ALGORITHMS's order, so every file has the same dictionary (`learning_phase` the
# same with classify.LEARNING_PHASES).
TYPES = {
    "int": (pa.int64(), "int64"),
    "int?": (pa.int64(), "Int64"),
    "float": (pa.float64(), "float64"),
    "bool": (pa.bool_(), "bool"),
    "str": (pa.string(), None),  # pandas' own string dtype ("str" in pandas 3, object before)
    "algorithm": (pa.dictionary(pa.int32(), pa.string()), pd.CategoricalDtype(list(ALGORITHMS))),
    "learning_phase": (pa.dictionary(pa.int32(), pa.string()),
                       pd.CategoricalDtype(list(LEARNING_PHASES))),
    "list<int>": (pa.list_(pa.int64()), None),  # a Python list per row (object)
    "list<float>": (pa.list_(pa.float64()), None),
    "list<str>": (pa.list_(pa.string()), None),
}

# Columns every runs.parquet has, in this order (then any other metric columns), with their types.
IDS = {"run_id": "str", "run_index": "int", "seed": "int", "data_seed": "int"}
ID_COLUMNS = list(IDS)
FIELD_COLUMNS = list(FIELDS)
RECORDS = {"refine_round": "int"}  # 0, or the refinement round that added the run (refine.py)
METRICS = {  # the metrics of a model (metrics.evaluate, the scan's loss-spike and dynamics
    # statistics: train.SpikeState, train.DynamicsState) and its labels
    "train_loss": "float", "test_loss": "float", "loss": "float",
    "train_acc": "float", "test_acc": "float", "acc": "float",
    "grad_sym": "float", "dist_irr": "float", "dist_irr_top_wrong": "float", "circularity": "float",
    "key_freqs": "list<int>", "n_key_freqs": "int", "clock_fve": "float", "pizza_fve": "float",
    "circle_freqs": "list<int>", "circle_clock_fve": "list<float>", "circle_pizza_fve": "list<float>",
    "circle_algorithms": "list<str>", "n_clock_circles": "int", "n_pizza_circles": "int",
    "param_norm": "float", "fit_step": "int", "spike_loss": "float", "spike_step": "int",
    "memorize_step": "int", "generalize_step": "int", "perfect_train_step": "int",
    "perfect_test_step": "int", "generalization_delay": "float",
    "diverged": "bool", "algorithm": "algorithm", "learning_phase": "learning_phase",
}
METRIC_COLUMNS = list(METRICS)
assert not set(FIELD_COLUMNS) & set(METRIC_COLUMNS), "a field and a metric would share a column"
RUN_COLUMNS = ID_COLUMNS + FIELD_COLUMNS + list(RECORDS) + METRIC_COLUMNS  # runs.parquet, in order
HISTORY_IDS = {"run_id": "str", "step": "int"}  # history.parquet: these, then METRIC_COLUMNS

# Every column's type (a name means the same in both tables)
COLUMN_TYPES: dict[str, str] = (
    IDS | {name: f.type.__name__ + ("?" if f.type is int and f.nullable else "")
           for name, f in FIELDS.items()} | RECORDS | HISTORY_IDS | METRICS)
assert set(COLUMN_TYPES.values()) <= set(TYPES), "a column type without its Arrow/pandas types"


def arrow_schema(columns) -> pa.Schema:
    """The Arrow schema of these (registered) columns, in this order."""
    return pa.schema([pa.field(c, TYPES[COLUMN_TYPES[c]][0]) for c in columns])


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every registered column in its pandas dtype (whatever wrote it: an old
    folder's file, a concat of chunks, rows just measured). Columns are neither added nor
    removed; unregistered ones are left as they are."""
    out = {}
    for name in frame.columns:
        dtype = TYPES[COLUMN_TYPES[name]][1] if name in COLUMN_TYPES else None
        column = frame[name]
        if isinstance(dtype, pd.CategoricalDtype):  # never turn an unknown label into NaN
            extra = sorted(set(column.dropna()) - set(dtype.categories))
            dtype = pd.CategoricalDtype(list(dtype.categories) + extra)
            if isinstance(column.dtype, pd.CategoricalDtype) and \
                    list(column.dtype.categories) == list(dtype.categories):
                continue  # (== between unordered categoricals ignores the categories' order)
            column = column.astype(object)
        elif dtype is None or column.dtype == dtype:
            continue
        elif dtype in ("int64", "bool") and column.isna().any():
            # not written by phasescan as it is: keep the values, and the nulls
            dtype = {"int64": "Int64", "bool": "boolean"}[dtype]
        out[name] = column.astype(dtype)
    return frame.assign(**out) if out else frame


def parquet_metadata(table: str) -> dict[bytes, bytes]:
    """The key-value metadata phasescan adds to a Parquet file holding `table` (runs | history)."""
    return {META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(), META_VERSION: __version__.encode(),
            META_TABLE: table.encode()}


def to_arrow(frame: pd.DataFrame, table: str) -> pa.Table:
    """The frame as an Arrow table with the registered types and phasescan's metadata (pandas'
    own metadata kept, so pandas.read_parquet gives back the same dtypes)."""
    arrow = pa.Table.from_pandas(conform(frame), preserve_index=False)
    schema = pa.schema([pa.field(f.name, TYPES[COLUMN_TYPES[f.name]][0]) if f.name in COLUMN_TYPES
                        else f for f in arrow.schema],
                       metadata=(arrow.schema.metadata or {}) | parquet_metadata(table))
    return arrow.cast(schema)


def write_table(path: Path, frame: pd.DataFrame, table: str) -> None:
    """Write a runs (or history) table to `path` atomically, with the explicit schema."""
    arrow = to_arrow(frame, table)
    write_atomic(path, lambda tmp: pq.write_table(arrow, tmp))


def read_table(path: Path) -> pd.DataFrame:
    """A runs or history Parquet file as a DataFrame with the registered dtypes (old files too)."""
    return conform(pd.read_parquet(path))


def rows(runs: list[dict], metrics: dict[str, np.ndarray], thresholds: dict) -> pd.DataFrame:
    """One row per run: its identity, every field, its metrics (host numpy arrays) and its
    labels by the classification rule with `thresholds`."""
    table = {col: [r[col] for r in runs] for col in ID_COLUMNS + FIELD_COLUMNS}
    table["refine_round"] = [r.get("refine_round", 0) for r in runs]  # 0: the grid; phasescan/analysis/refine.py
    return conform(pd.DataFrame(table | metric_columns(metrics, thresholds)))


def metric_columns(metrics: dict[str, np.ndarray], thresholds: dict) -> dict[str, list]:
    """The METRIC_COLUMNS of models measured by metrics.evaluate (leading axis = model), lists
    and labels derived, in column order (those the measurement has: a single model measured by
    `phasescan.evaluate` has no training history, so no loss-spike or dynamics columns and no
    learning_phase)."""
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
    if "memorize_step" in metrics:  # trained here: the dynamics were carried through the scan
        derived["learning_phase"] = list(learning_phase(metrics, thresholds))
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
    write_table(path, frame, "runs")
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
    frame = conform(pd.concat(frames, ignore_index=True))  # old and new chunks alike
    return frame.drop_duplicates("run_id").sort_values("run_index").reset_index(drop=True)


def assemble(out_dir: Path, run_ids: set[str] | None = None) -> pd.DataFrame:
    """Write runs.parquet from the finished chunks (of `run_ids` only, when given: the runs
    config.yaml describes), atomically; return the table."""
    frame = read_chunks(out_dir, quiet=True)  # skipped files were named when the sweep began
    if run_ids is not None and frame is not None:
        kept = frame["run_id"].isin(run_ids)
        if not kept.all():
            log.info("runs.parquet: %d runs of this command; %d more, refined by an earlier command "
                     "with other refinement options, stay in %s/", kept.sum(), (~kept).sum(), CHUNKS)
        frame = frame[kept].reset_index(drop=True)
    write_table(Path(out_dir) / RUNS, frame, "runs")
    return frame


def load(path) -> pd.DataFrame:
    """Read a results folder (or a runs.parquet file) into a DataFrame.

    A folder whose sweep is still running or was interrupted is read from its finished chunks,
    with a note on stderr saying how many runs are done (a damaged manifest.json, which says
    which chunks are the sweep's, raises ConfigError in one line).
    """
    path = Path(path)
    if path.is_file():
        return read_table(path)
    if (path / RUNS).is_file():
        try:
            return read_table(path / RUNS)
        except Exception as error:  # damaged outside phasescan: the chunks hold the same rows
            print(f"phasescan: {path / RUNS}: unreadable ({type(error).__name__}); reading the "
                  f"finished chunks instead", file=sys.stderr)
    frame = read_chunks(path)
    total = "?"
    if (path / MANIFEST).is_file():
        total = read_manifest(path).get("n_runs", "?")
    if frame is None:
        if total != "?":
            raise FileNotFoundError(f"{path}: sweep started, no results yet (0 of {total} runs done)")
        raise FileNotFoundError(f"{path}: no phasescan results here (no {RUNS} and no {CHUNKS}/)")
    print(f"phasescan: {path}: sweep unfinished, {len(frame)} of {total} runs done", file=sys.stderr)
    return frame


def holds_results(path: Path) -> bool:
    return (path / RUNS).is_file() or (path / CHUNKS).is_dir()


def _natural(path: Path) -> list:
    """Sort key: multirun job folders 0, 1, ..., 10 in number order."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name)]


def result_sources(source) -> tuple[list[Path], bool]:
    """The results folders (or runs.parquet files) `source` names, and whether it named several:
    a glob pattern, or a folder without results of its own whose subfolders have some (a Hydra
    multirun, a folder of sweeps)."""
    text = str(source)
    if any(c in text for c in "*?["):
        return sorted((Path(p) for p in glob.glob(text) if Path(p).is_file() or holds_results(Path(p))),
                      key=_natural), True
    path = Path(source)
    if path.is_dir() and not holds_results(path):
        subs = sorted((p for p in path.iterdir() if p.is_dir() and holds_results(p)), key=_natural)
        if subs:
            return subs, True
    return [path], False


def last_overrides(folder: Path) -> str:
    """The overrides of the last command that wrote the folder (invocations.yaml), as typed."""
    import yaml

    try:
        entries = yaml.safe_load((folder / "invocations.yaml").read_text()) or []
        return " ".join(str(o) for o in entries[-1].get("overrides", []))
    except (OSError, yaml.YAMLError, AttributeError, IndexError, TypeError):
        return ""


def load_many(*sources) -> pd.DataFrame:
    """Several results folders as one table (phasescan.load with several sources, a glob or a
    multirun folder): every row with its `folder` and the `overrides` of the command that made
    it in front. One plain folder or file: `load` itself."""
    paths, several = [], len(sources) > 1
    for source in sources:
        found, many = result_sources(source)
        if not found:
            raise FileNotFoundError(f"{source}: matches no phasescan results")
        paths += found
        several |= many
    if not several:
        return load(paths[0])
    frames = []
    for path in paths:
        folder = path.parent if path.is_file() else path
        frame = load(path)
        frame.insert(0, "overrides", last_overrides(folder))
        frame.insert(0, "folder", str(folder))
        frames.append(frame)
    return conform(pd.concat(frames, ignore_index=True))


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
        "cpu": cpu_model(),
        "git_commit": git_commit(),
    }


def cpu_model() -> str:
    """The CPU's model name: another CPU rounds float32 matmuls differently (vector width, XLA's
    kernels), and thousands of steps amplify that, so a study is bit for bit only on its own."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        vector = [flag for flag in VECTOR_FLAGS if flag in info.get("flags", "").split()]
        return f"{info.get('model name', platform.machine())} ({' '.join(vector) or 'no avx'})"
    except OSError:
        return platform.processor() or platform.machine()


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")  # what XLA's CPU kernels use


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """manifest.json: `manifest` with the schema version and the phasescan version that wrote
    the folder's tables."""
    manifest = manifest | {"schema_version": SCHEMA_VERSION, "phasescan_version": __version__}
    write_atomic(Path(out_dir) / MANIFEST,
                 lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n"))


def read_manifest(out_dir: Path) -> dict | None:
    """manifest.json (None when the folder has none). A damaged one (not JSON, not an object)
    raises ConfigError in one line naming the file."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable ({damage(error)}); phasescan wrote it atomically, "
                          "so it was changed outside phasescan") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path}: holds {type(manifest).__name__} {short(manifest)}, not a "
                          "manifest (a JSON object); it was changed outside phasescan")
    return manifest


def parse_config(path: Path) -> dict:
    """A config.yaml as a resolved dict; a damaged one (not YAML, not a mapping, an
    interpolation that does not resolve) raises ConfigError in one line naming the file."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    try:
        loaded = OmegaConf.load(path)
        cfg = OmegaConf.to_container(loaded, resolve=True)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: unreadable ({damage(error)})") from None
    except OmegaConfBaseException as error:  # an interpolation that does not resolve, ...
        key = getattr(error, "full_key", None)
        raise ConfigError(f"{path}: {key + ': ' if key else ''}{damage(error)}") from None
    except Exception as error:  # yaml's errors (a scanner or parser error: not YAML)
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(error, "problem", None) or damage(error)
        raise ConfigError(f"{path}: not valid YAML ({what}{where})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: holds {type(cfg).__name__} {short(cfg)}, not a config "
                          "(a mapping of sections)")
    if cfg and not set(cfg) & set(CONFIG_SECTIONS):
        raise ConfigError(f"{path}: not a phasescan config (none of the sections "
                          f"{', '.join(CONFIG_SECTIONS)}; keys {short(list(cfg))})")
    for section in CONFIG_SECTIONS:
        if not isinstance(cfg.get(section) or {}, dict):
            raise ConfigError(f"{path}: {section}={short(cfg[section])}: expected a mapping")
    return cfg


# The sections of a config.yaml (conf/config.yaml): each a mapping when present
CONFIG_SECTIONS = ("sweep", "task", "model", "train", "classify", "metrics", "refinement",
                   "tracking_options")


def damage(error: BaseException) -> str:
    """An exception as one short line (its type and first line)."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_config(out_dir: Path) -> dict:
    """The sweep's resolved config (config.yaml). A sweep's folder (it has manifest.json) without
    one (killed before writing it) or with a damaged one raises ConfigError: its thresholds are
    read from the folder or not at all, never from today's defaults. A bare table (runs.parquet
    alone, made or copied by hand) has no config: the defaults."""
    path = Path(out_dir) / CONFIG
    if path.is_file() and path.stat().st_size:
        return parse_config(path)
    if not (Path(out_dir) / MANIFEST).is_file():
        from ..core.config import compose
        return compose()
    raise ConfigError(f"{path}: missing, so the thresholds of {out_dir}'s runs are unknown; run its "
                      f"sweep's command again (the last in {Path(out_dir) / 'invocations.yaml'}) to "
                      "write it: nothing is trained again")
