"""Running a sweep: buckets -> chunks -> one compiled `jit(vmap(train))` per bucket -> rows.

Every finished chunk is written to disk (results.write_chunk) before the next one starts, and a
rerun with the same out_dir skips the runs already done (matched by run_id). Chunks are laid out
over the whole bucket, done or not, so a resumed sweep runs its remaining models in the same
compiled programs as an uninterrupted one and gets the same bits. A chunk that runs the device
out of memory is split in halves and retried (README "Reliability"). Each chunk's model axis is
split over the local devices (`sweep.devices`); `sweep.num_shards` picks this process's share of
the grid (phasescan/shard.py). Refinement (phasescan/refine.py) trains its added runs through the
same chunk loop, `train_runs`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import grid, history, refine, results, shard, weights
from .classify import classify
from .config import ConfigError, check_options
from .progress import Progress
from .tasks import INPUT_FORMATS
from .train import HParams, Spec, make_train, split_history

log = logging.getLogger("phasescan")

BYTES = 4  # float32


def bytes_per_model(spec: Spec) -> int:
    """A generous estimate of one model's device memory while training and measuring it."""
    d, p, L = spec.d_model, spec.p, spec.n_layers
    fmt = INPUT_FORMATS[spec.input_format]
    n_params = 2 * fmt.vocab(p) * d + fmt.n_ctx * d + L * (4 * d * d + 8 * d * d + 5 * d)
    n_examples = p * p if spec.batch_size is None else spec.batch_size
    # Activations kept for the backward pass: per example and layer roughly n_ctx positions x
    # (residual, q, k, v, z, mlp hidden x 2) plus the logits. (The attention-free models are
    # smaller than the transformer of the same width: the estimate stays an upper bound.)
    activations = n_examples * (L * fmt.n_ctx * (5 * d + 8 * d) + 3 * fmt.vocab(p))
    metric_tensors = 4 * p ** 3  # logits over (a, b, c) and their centred copies
    return BYTES * (4 * n_params + 3 * activations + metric_tensors)


def device_memory_budget() -> int:
    """Bytes the chunk may use: 60% of the accelerator's memory, or 25% of host RAM on CPU."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.6 * stats["bytes_limit"])
    return int(0.25 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def chunk_size_for(spec: Spec, n_runs: int, requested, max_auto: int, n_devices: int = 1) -> int:
    """Models per compiled program. `auto` fits the memory estimate of each of the n_devices
    (max_auto models per device at most); chunks of one bucket are made equal (the last one
    padded) so the bucket compiles once, and a multiple of n_devices so each device gets a share."""
    if requested == "auto":
        size = n_devices * max(1, min(max_auto, device_memory_budget() // bytes_per_model(spec)))
    else:
        size = int(requested)
    n_chunks = math.ceil(n_runs / size)
    return n_devices * math.ceil(math.ceil(n_runs / n_chunks) / n_devices)


def sweep_devices(sweep: dict) -> list:
    """The local devices each chunk is sharded over: sweep.devices = null (all) or a count."""
    available = jax.local_devices()
    n = sweep.get("devices")
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(available):
        raise ConfigError(f"sweep.devices={n!r}: must be null (all {len(available)} local "
                          f"devices) or an integer in 1..{len(available)}")
    return available[:n]


def sweep_identity(runs: list[dict], cfg: dict) -> str:
    """What makes two sweeps the same: their runs and how they are measured and labelled."""
    identity = {"run_ids": [r["run_id"] for r in runs], "metrics": cfg["metrics"],
                "classify": cfg["classify"]}
    if any(r.get("log_every") for r in runs):  # a history is part of what the folder holds
        identity["log_every"] = sorted({r["log_every"] or 0 for r in runs})
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def chunk_function(train, chunk_size: int, n_devices: int, vmap_group: int | None):
    """The chunk as one function of (keys, hp): each device trains its share of the models,
    `vmap_group` of them side by side (vmapped), the groups one after another (lax.map).
    None: the whole share side by side. (On a CPU, batched matmuls can be slower than one
    model's: docs/benchmarks.md measures both.)"""
    per_device = chunk_size // n_devices
    if vmap_group is None or vmap_group >= per_device:
        return jax.vmap(train)

    def on_device(keys, hp):
        return jax.lax.map(lambda args: train(*args), (keys, hp),
                           batch_size=None if vmap_group == 1 else vmap_group)
    if n_devices == 1:
        return on_device

    def chunk(keys, hp):  # (chunk,) -> (device, share): the sharded axis stays the leading one
        by_device = lambda x: x.reshape(n_devices, per_device, *x.shape[1:])
        out = jax.vmap(on_device)(*jax.tree_util.tree_map(by_device, (keys, hp)))
        return jax.tree_util.tree_map(lambda x: x.reshape(chunk_size, *x.shape[2:]), out)
    return chunk


def compile_chunk(spec: Spec, chunk_size: int, metric_opts: dict, devices: list | None = None,
                  vmap_group: int | None = None):
    """The bucket's program, compiled ahead of time so compile time is measured on its own.

    The model axis is split over `devices` (default: the default device) with a 1-D mesh:
    models are independent, so each device trains its share with no communication."""
    devices = devices or jax.devices()[:1]
    if chunk_size % len(devices):
        raise ValueError(f"chunk_size={chunk_size} is not a multiple of {len(devices)} devices")
    models = NamedSharding(Mesh(np.asarray(devices), ("model",)), PartitionSpec("model"))
    train = make_train(spec, n_triples=metric_opts["grad_sym_triples"],
                       triples_seed=metric_opts["triples_seed"],
                       key_freq_min_share=metric_opts["key_freq_min_share"])
    keys = jax.ShapeDtypeStruct((chunk_size,), jax.random.key(0).dtype)
    hp = HParams(**{name: jax.ShapeDtypeStruct((chunk_size,), jnp.uint32 if name == "split_seed"
                                               else jnp.float32) for name in HParams._fields})
    chunk = chunk_function(train, chunk_size, len(devices), vmap_group)
    return jax.jit(chunk, in_shardings=models, out_shardings=models).lower(keys, hp).compile()


def run_chunk(compiled, runs: list[dict], chunk_size: int, keep_params: bool = False):
    """Train and measure `runs` (padded to the compiled size). Returns host metric arrays of the
    real runs, and with `keep_params` also their parameters (leading axis = run)."""
    padded = runs + [runs[-1]] * (chunk_size - len(runs))
    keys = jax.vmap(jax.random.key)(jnp.asarray([r["seed"] for r in padded], dtype=jnp.uint32))
    inputs = jax.device_put((keys, HParams.from_runs(padded)), compiled.input_shardings[0])
    params, metrics = compiled(*inputs)
    metrics = {k: np.asarray(v)[: len(runs)] for k, v in jax.device_get(metrics).items()}
    if not keep_params:
        return metrics
    return metrics, jax.tree_util.tree_map(lambda x: np.asarray(x)[: len(runs)], jax.device_get(params))


def validated_runs(cfg: dict) -> list[dict]:
    """Every run of the sweep (of this shard, with sweep.num_shards > 1) after checking the
    whole config; one ConfigError lists every problem (fields, axes, seeds, options, devices,
    shards) before anything is written."""
    problems = []
    try:
        runs = grid.expand(cfg)
    except ConfigError as error:
        runs, problems = [], error.problems
    problems += check_options(cfg)
    if cfg.get("refine") and (cfg["sweep"].get("num_shards") or 1) > 1:
        problems.append("refine=true: refinement needs the whole grid in one process; "
                        "use sweep.num_shards=1")
    for check in (refine.options, lambda cfg: sweep_devices(cfg["sweep"])):
        try:
            check(cfg)
        except ConfigError as error:
            problems += error.problems
    try:
        runs = shard.select(runs, cfg["sweep"])  # this shard's runs (all of them, unsharded)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems)
    return runs


def out_dir_holds(out_dir: Path, identity: str) -> str | None:
    """None if out_dir is free (absent, empty) or holds this sweep; else what it holds."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        return "a file, not a folder"
    try:
        manifest = results.read_manifest(out_dir)
    except (OSError, ValueError):
        return f"an unreadable {results.MANIFEST}"
    if manifest is not None:
        return None if manifest.get("sweep_identity") == identity else \
            "results of a different sweep configuration"
    if any(not results.is_temporary(path) for path in out_dir.iterdir()):
        return f"files that are not phasescan results (no {results.MANIFEST})"
    return None


def pick_out_dir(out_dir: Path, identity: str, taken: str = "refuse") -> Path:
    """out_dir if it is free or holds this sweep (resume). Otherwise refuse, touching nothing,
    or with taken="sibling" the first of out_dir-2, out_dir-3, ... that is free or holds it."""
    out_dir = Path(out_dir)
    holds = out_dir_holds(out_dir, identity)
    if holds is None:
        return out_dir
    if taken != "sibling":
        raise ConfigError(
            f"out_dir={out_dir}: holds {holds}; nothing in it was changed. Choose another "
            f"out_dir, or add out_dir_taken=sibling to start over in a fresh folder next to it "
            f"({out_dir.name}-2, -3, ...)")
    n = 2
    while out_dir_holds(sibling := out_dir.with_name(f"{out_dir.name}-{n}"), identity) is not None:
        n += 1
    log.info("out_dir %s holds %s: writing to %s instead", out_dir, holds, sibling)
    return sibling


def choose_out_dir(cfg: dict, out_dir: Path) -> Path:
    """Where run_sweep(cfg, out_dir) writes (validates cfg; see pick_out_dir)."""
    identity = sweep_identity(validated_runs(cfg), cfg)
    return pick_out_dir(out_dir, identity, cfg.get("out_dir_taken", "refuse"))


def prepare_out_dir(out_dir: Path, cfg_yaml: str, identity: str) -> dict:
    """Create or reopen out_dir (already picked by pick_out_dir). Returns the manifest."""
    manifest = results.read_manifest(out_dir)
    if manifest is None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"out_dir={out_dir}: cannot create it ({error.strerror})") from None
        # The manifest first: from now on the folder is recognisably this sweep's.
        manifest = {"sweep_identity": identity, "resumes": -1}
        results.write_manifest(out_dir, manifest)
        results.write_atomic(out_dir / results.CONFIG, lambda tmp: tmp.write_text(cfg_yaml))
    return manifest


def is_out_of_memory(error: Exception) -> bool:
    message = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower())


def programs_of(spec: Spec, metric_opts: dict, size: int, compile_s: dict, devices: list | None = None,
                vmap_group: int | None = None):
    """program(n): the bucket's program for n models, compiled on first use and timed into
    compile_s (under repr(spec), or "<spec> x<n>" for the smaller sizes of a split)."""
    programs = {}

    def program(n: int):
        if n not in programs:
            t0 = time.perf_counter()
            programs[n] = compile_chunk(spec, n, metric_opts, devices, vmap_group=vmap_group)
            compile_s[repr(spec) if n == size else f"{spec!r} x{n}"] = round(time.perf_counter() - t0, 3)
        return programs[n]
    return program


def run_pieces(program, runs: list[dict], size: int, keep_params: bool, n_devices: int = 1):
    """Train `runs` in pieces of `size` models, `program(size)` the compiled program. When the
    device runs out of memory, halve the size (recompiling; a multiple of n_devices, each device
    keeping a share) and go on, down to one model per device.
    Yields (piece, run_chunk's result, size) as each piece finishes, so it can be saved."""
    start = 0
    while start < len(runs):
        piece = runs[start: start + size]
        try:
            result = run_chunk(program(size), piece, size, keep_params=keep_params)
        except Exception as error:
            if size == n_devices or not is_out_of_memory(error):
                raise
            smaller = n_devices * math.ceil(size / 2 / n_devices)
            log.warning("out of device memory with %d models per program: retrying with %d",
                        size, smaller)
            size = smaller
            continue
        yield piece, result, size
        start += len(piece)


def run_sweep(cfg: dict, out_dir: Path, cfg_yaml: str = "") -> pd.DataFrame:
    """Train and measure every run of the sweep into out_dir; return the runs table."""
    runs = validated_runs(cfg)
    devices = sweep_devices(cfg["sweep"])
    identity = sweep_identity(runs, cfg)
    out_dir = pick_out_dir(out_dir, identity, cfg.get("out_dir_taken", "refuse"))
    manifest = prepare_out_dir(out_dir, cfg_yaml, identity)
    done_ids = done_run_ids(out_dir)
    todo = [r for r in runs if r["run_id"] not in done_ids]
    manifest.update(results.environment(), sweep=cfg["sweep"].get("name"), n_runs=len(runs),
                    devices_used=len(devices),
                    resumes=manifest["resumes"] + 1, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    finished=None)
    manifest.setdefault("compile_s", {})
    results.write_manifest(out_dir, manifest)
    if len(todo) < len(runs):
        log.info("resuming %s: %d of %d runs already done", out_dir, len(runs) - len(todo), len(runs))

    start = time.perf_counter()
    progress = Progress(len(runs), done=len(runs) - len(todo))
    train_runs(cfg, out_dir, runs, done_ids, manifest, progress, devices)
    progress.close()
    if refine.options(cfg):
        refine.run(cfg, out_dir, lambda extra: train_new_runs(cfg, out_dir, extra, manifest, devices))

    frame = results.assemble(out_dir)
    history.assemble(out_dir)
    manifest.update(wall_s=round(manifest.get("wall_s", 0) + time.perf_counter() - start, 3),
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S"), n_done=len(frame))
    results.write_manifest(out_dir, manifest)
    return frame


def train_new_runs(cfg: dict, out_dir: Path, runs: list[dict], manifest: dict,
                   devices: list) -> pd.DataFrame:
    """Train the runs not yet in out_dir (e.g. refinement's); return the rows of all `runs`."""
    done_ids = done_run_ids(out_dir)
    progress = Progress(len(runs), done=sum(r["run_id"] in done_ids for r in runs))
    train_runs(cfg, out_dir, runs, done_ids, manifest, progress, devices)
    progress.close()
    wanted = {r["run_id"] for r in runs}
    frame = results.read_chunks(out_dir)
    return frame[frame["run_id"].isin(wanted)].reset_index(drop=True)


def done_run_ids(out_dir: Path) -> set[str]:
    """The run_ids whose rows are already in out_dir's chunks (resume skips them)."""
    done = results.read_chunks(out_dir)
    return set() if done is None else set(done["run_id"])


def train_runs(cfg: dict, out_dir: Path, runs: list[dict], done_ids: set[str], manifest: dict,
               progress: Progress, devices: list) -> None:
    """Train, measure, label and write the runs not in done_ids, chunk by chunk (one compiled
    program per bucket, its model axis split over `devices`)."""
    for bucket_runs in grid.buckets(runs).values():
        if all(r["run_id"] in done_ids for r in bucket_runs):
            continue
        spec = Spec.from_run(bucket_runs[0])
        # Sized from the whole bucket, done or not: the same programs as an uninterrupted run.
        size = chunk_size_for(spec, len(bucket_runs), cfg["sweep"]["chunk_size"],
                              cfg["sweep"]["max_chunk_size"], len(devices))
        program = programs_of(spec, cfg["metrics"], size, manifest["compile_s"], devices,
                              cfg["sweep"].get("vmap_group"))
        fits = size  # models per program that fit the device (halved on running out of memory)
        for i in range(0, len(bucket_runs), size):
            chunk = [r for r in bucket_runs[i: i + size] if r["run_id"] not in done_ids]
            if not chunk:
                continue
            to_save = lambda run: weights.should_save(run, cfg["save_weights"], cfg["sweep"]["seed_start"])
            keep = any(map(to_save, chunk))
            for piece, result, fits in run_pieces(program, chunk, fits, keep, len(devices)):
                metrics, params = result if keep else (result, None)
                for j, run in enumerate(piece):  # weights first: a finished chunk has its files
                    if to_save(run):
                        weights.save(weights.path_of(out_dir, run["run_id"]),
                                     weights.to_arrays(weights.model_at(params, j), run))
                metrics, logged = split_history(metrics)
                if logged:  # the history first: a finished chunk has its history too
                    history.write_chunk(out_dir, history.rows(piece, logged, cfg["classify"]))
                labels = classify(metrics, cfg["classify"])
                results.write_chunk(out_dir, results.rows(piece, metrics, labels))
                progress.update(len(piece))
