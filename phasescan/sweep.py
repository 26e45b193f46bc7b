"""Running a sweep: buckets -> chunks -> one compiled `jit(vmap(train))` per bucket -> rows.

Every finished chunk is written to disk (results.write_chunk) before the next one starts, and a
rerun with the same out_dir skips the runs already done (matched by run_id), so the final table
does not depend on the chunking or on interruptions.
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

from . import grid, results, shard, weights
from .classify import classify
from .config import ConfigError
from .progress import Progress
from .train import HParams, Spec, make_train

log = logging.getLogger("phasescan")

BYTES = 4  # float32


def bytes_per_model(spec: Spec) -> int:
    """A generous estimate of one model's device memory while training and measuring it."""
    d, p, L = spec.d_model, spec.p, spec.n_layers
    n_params = 2 * p * d + 2 * d + L * (4 * d * d + 8 * d * d + 5 * d)
    n_examples = p * p if spec.batch_size is None else spec.batch_size
    # Activations kept for the backward pass: per example and layer roughly 2 positions x
    # (residual, q, k, v, z, mlp hidden x 2) plus the logits.
    activations = n_examples * (L * 2 * (5 * d + 8 * d) + 3 * p)
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
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def compile_chunk(spec: Spec, chunk_size: int, metric_opts: dict, devices: list | None = None):
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
    return jax.jit(jax.vmap(train), in_shardings=models, out_shardings=models).lower(keys, hp).compile()


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


def prepare_out_dir(out_dir: Path, cfg_yaml: str, identity: str) -> dict:
    """Create or reopen out_dir; refuse one holding a different sweep. Returns the manifest."""
    manifest = results.read_manifest(out_dir)
    if manifest is not None and manifest.get("sweep_identity") != identity:
        raise ConfigError(
            f"out_dir={out_dir}: holds results of a different sweep configuration; "
            "nothing was changed. Choose another out_dir (or delete that folder yourself).")
    out_dir.mkdir(parents=True, exist_ok=True)
    if manifest is None:
        results.write_atomic(out_dir / results.CONFIG, lambda tmp: tmp.write_text(cfg_yaml))
        manifest = {"sweep_identity": identity, "resumes": -1}
    return manifest


def run_sweep(cfg: dict, out_dir: Path, cfg_yaml: str = "") -> pd.DataFrame:
    """Train and measure every run of the sweep into out_dir; return the runs table."""
    out_dir = Path(out_dir)
    runs = shard.select(grid.expand(cfg), cfg["sweep"])  # this shard's runs (all, unsharded)
    devices = sweep_devices(cfg["sweep"])
    save = cfg.get("save_weights", "none")
    if not (save in ("none", "all", None) or isinstance(save, int) and not isinstance(save, bool) and save > 0):
        raise ConfigError(f"save_weights={save!r}: must be none, all or a positive integer "
                          "(the number of seeds per grid cell whose weights are kept)")
    manifest = prepare_out_dir(out_dir, cfg_yaml, sweep_identity(runs, cfg))
    done = results.read_chunks(out_dir)
    done_ids = set() if done is None else set(done["run_id"])
    todo = [r for r in runs if r["run_id"] not in done_ids]
    manifest.update(results.environment(), sweep=cfg["sweep"].get("name"), n_runs=len(runs),
                    devices_used=len(devices),
                    resumes=manifest["resumes"] + 1, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    finished=None)
    manifest.setdefault("compile_s", {})
    results.write_manifest(out_dir, manifest)
    if done_ids:
        log.info("resuming %s: %d of %d runs already done", out_dir, len(runs) - len(todo), len(runs))

    start = time.perf_counter()
    progress = Progress(len(runs), done=len(runs) - len(todo))
    for bucket_runs in grid.buckets(todo).values():
        spec = Spec.from_run(bucket_runs[0])
        size = chunk_size_for(spec, len(bucket_runs), cfg["sweep"]["chunk_size"],
                              cfg["sweep"]["max_chunk_size"], len(devices))
        t0 = time.perf_counter()
        compiled = compile_chunk(spec, size, cfg["metrics"], devices)
        manifest["compile_s"][repr(spec)] = round(time.perf_counter() - t0, 3)
        for i in range(0, len(bucket_runs), size):
            chunk = bucket_runs[i: i + size]
            to_save = [weights.should_save(r, cfg["save_weights"], cfg["sweep"]["seed_start"])
                       for r in chunk]
            metrics, params = run_chunk(compiled, chunk, size, keep_params=True) if any(to_save) \
                else (run_chunk(compiled, chunk, size), None)
            for i in np.flatnonzero(to_save):  # weights first: a finished chunk has its files
                weights.save(weights.path_of(out_dir, chunk[i]["run_id"]),
                             weights.to_arrays(weights.jax_tree_index(params, i), chunk[i]))
            labels = classify(metrics, cfg["classify"])
            results.write_chunk(out_dir, results.rows(chunk, metrics, labels))
            progress.update(len(chunk))
    progress.close()

    frame = results.assemble(out_dir)
    manifest.update(wall_s=round(manifest.get("wall_s", 0) + time.perf_counter() - start, 3),
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S"), n_done=len(frame))
    results.write_manifest(out_dir, manifest)
    return frame
