"""The shards of one sweep joined into SWEEP_DIR/runs.parquet, config.yaml and manifest.json
(`python -m phasescan.merge SWEEP_DIR`; its docstring says what is checked): `merge` checks every
shard against the others and the grid, and writes nothing when a check fails."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import yaml

from ..core import grid, shard
from ..core.config import ConfigError, flatten, is_int
from ..store import history, results
from .sweep import sweep_identity

# Settings that may differ between shards of one sweep: they change where and how fast a shard
# runs, not its rows. (Not sweep.chunk_size: an integer one lays out the chunks the shards share.)
EXECUTION_KEYS = ("out_dir", "sweep.shard", "sweep.devices", "sweep.max_chunk_size",
                  "sweep.vmap_group", "sweep.segment_steps", "sweep.checkpoint_every", "plot",
                  "compile_cache", "tracking", "tracking_options")  # a key or a section


class MergeError(ValueError):
    """Why the shards cannot be merged, one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def find_shards(sweep_dir: Path) -> list[Path]:
    """Every results folder below sweep_dir (not sweep_dir itself, which receives the merge)."""
    return sorted(m.parent for m in Path(sweep_dir).rglob(results.MANIFEST)
                  if m.parent != Path(sweep_dir) and (m.parent / results.CONFIG).is_file())


def sweep_settings(cfg: dict) -> dict:
    """The settings that define the sweep's rows (flattened), without EXECUTION_KEYS."""
    return {k: v for k, v in flatten(cfg).items()
            if not any(k == key or k.startswith(key + ".") for key in EXECUTION_KEYS)}


def read_shard_configs(sweep_dir: Path) -> dict[Path, dict]:
    """Each shard folder's config.yaml (resolved: a shard written before config.yaml was may
    hold interpolations), its manifest.json read too: a damaged file is one line each."""
    configs, problems = {}, []
    for folder in find_shards(sweep_dir):
        try:
            if not (folder / results.CONFIG).stat().st_size:
                raise ConfigError(f"{folder / results.CONFIG}: empty (changed outside phasescan, "
                                  "which writes it whole)")
            cfg = results.parse_config(folder / results.CONFIG)
            results.read_manifest(folder)
        except OSError as error:
            problems.append(f"{folder}: unreadable ({error.strerror or error})")
            continue
        except ConfigError as error:
            problems += error.problems
            continue
        if isinstance(cfg.get("sweep"), dict):
            configs[folder] = cfg
    if problems:
        raise MergeError(problems)
    if not configs:
        raise MergeError([f"{sweep_dir}: no shard results here (no folder with "
                          f"{results.CONFIG} and {results.MANIFEST} below it)"])
    return configs


def check_one_sweep(configs: dict[Path, dict]) -> tuple[dict, int, dict[int, Path]]:
    """The common config, N, and shard index -> folder; every inconsistency as a MergeError."""
    (first_folder, first), *_ = configs.items()
    reference = sweep_settings(first)
    problems, by_index = [], {}
    for folder, cfg in configs.items():
        settings = sweep_settings(cfg)
        differing = sorted(k for k in reference.keys() | settings.keys()
                           if reference.get(k) != settings.get(k))
        if differing:
            problems.append(f"{folder}: not the same sweep as {first_folder} "
                            f"(differs in {', '.join(differing)})")
            continue
        try:
            index, _ = shard.shard_options(cfg["sweep"])
        except ConfigError as error:
            problems += [f"{folder}: {p}" for p in error.problems]
            continue
        by_index.setdefault(index, []).append(folder)
    n = first["sweep"].get("num_shards", 1)
    if not is_int(n) or n < 1:  # every folder said so above
        raise MergeError(problems)
    for index, folders in sorted(by_index.items()):
        if len(folders) > 1:
            problems.append(f"shard {index} of {n}: found {len(folders)} times "
                            f"({', '.join(map(str, folders))}); keep one")
    for index in range(n):
        if index not in by_index:
            problems.append(f"shard {index} of {n}: missing (no results folder with "
                            f"sweep.shard={index}); run the sweep's command with "
                            f"sweep.shard={index} out_dir=<this folder>")
    if problems:
        raise MergeError(problems)
    return first, n, {index: folders[0] for index, folders in by_index.items()}


def merge(sweep_dir) -> pd.DataFrame:
    """Check the shards under sweep_dir and write the sweep's runs.parquet there; return it."""
    sweep_dir = Path(sweep_dir)
    cfg, n, folders = check_one_sweep(read_shard_configs(sweep_dir))
    whole = cfg | {"sweep": cfg["sweep"] | {"num_shards": 1, "shard": 0}}  # the unsharded sweep
    runs = grid.expand(whole)
    expected = {s: set() for s in range(n)}
    for run_id, s in shard.shard_of_runs(runs, cfg["sweep"]).items():
        expected[s].add(run_id)

    frames, problems = [], []
    for index, folder in sorted(folders.items()):
        frame = results.read_chunks(folder)
        done = set() if frame is None else set(frame["run_id"])
        if done - expected[index]:
            problems.append(f"shard {index} of {n} ({folder}): {len(done - expected[index])} runs "
                            "that are not this shard's (a different grid?)")
        elif done != expected[index]:
            problems.append(f"shard {index} of {n} ({folder}): unfinished, {len(done)} of "
                            f"{len(expected[index])} runs done; rerun its command to resume")
        else:
            frames.append(frame)
    if problems:
        raise MergeError(problems)

    frame = pd.concat(frames, ignore_index=True).sort_values("run_index").reset_index(drop=True)
    results.write_atomic(sweep_dir / results.CONFIG,
                         lambda tmp: tmp.write_text(yaml.safe_dump(whole, sort_keys=False)))
    results.write_table(sweep_dir / results.RUNS, frame, "runs")
    results.write_manifest(sweep_dir, {
        "sweep_identity": sweep_identity(runs, whole), "sweep": cfg["sweep"].get("name"),
        "n_runs": len(runs), "n_done": len(frame), "num_shards": n,
        "merged_from": [str(folders[i].relative_to(sweep_dir)) for i in range(n)],
        "merged": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumes": 0})
    histories = [history.read_chunks(folders[i]) for i in range(n)]
    if any(h is not None for h in histories):
        merged = pd.concat([h for h in histories if h is not None], ignore_index=True)
        results.write_table(sweep_dir / history.HISTORY, merged, history.KIND)
    return frame
