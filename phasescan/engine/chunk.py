"""A chunk: many models of one bucket trained side by side, segment by segment.

`compile_chunk` compiles the bucket's Program (train.make_program: init, advance, measure) for a
chunk of models, vmapped and sharded over the local devices; `run_chunk` drives it from the host:
init, then `advance` segment after segment (a lax.scan of `segment` steps each, the state's
buffers donated), measuring every `train.log_every` steps, then the final measurement. Between
segments the caller's `on_segment` sees the progress (and may checkpoint or stop); a chunk can
start from a saved state (`resume`) and gives the same bits as if it had never stopped.
How many models fit a device: `chunk_size_for`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..core import grid
from ..core.tasks import INPUT_FORMATS
from . import compile_cache
from .train import HParams, Program, Spec, make_program

BYTES = 4  # float32
HISTORY_PREFIX = "history/"  # run_chunk's metrics hold the train.log_every history under it
DEFAULT_SEGMENT = 500  # steps per advance: dispatch costs well under 1% (docs/benchmarks.md)


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
    # The measurement: logits over (a, b, c) and their centred copies, one circle's templates
    # (the circles' forward passes over all pairs are no larger than training's, counted above).
    metric_tensors = 8 * p ** 3
    return BYTES * (4 * n_params + 3 * activations + metric_tensors)


def shared_bytes(spec: Spec) -> int:
    """Memory a chunk needs once, whatever its size: the Clock and Pizza template stacks over
    every frequency (2 x p//2 x p^3 with their centred and flattened copies; the same for every
    model, so not vmapped). At p = 113 they are ~2 GB; at p = 2000, ~10^5 GB."""
    return BYTES * 6 * (spec.p // 2) * spec.p ** 3


def memory_problem(spec: Spec) -> str | None:
    """A line naming the shape fields when one model cannot fit the device (None: it fits)."""
    need, budget = bytes_per_model(spec) + shared_bytes(spec), device_memory_budget()
    if need <= budget:
        return None
    return (f"task.p={spec.p}, model.d_model={spec.d_model}: one model needs about "
            f"{need / 2**30:.3g} GiB (training and measuring it; the metrics grow as p^4), more "
            f"than the {budget / 2**30:.3g} GiB this device allows (chunk.device_memory_budget)")


def device_memory_budget() -> int:
    """Bytes the chunk may use: 60% of the accelerator's memory, or 25% of host RAM on CPU (the
    machine's other processes need theirs); in a SLURM job that asked for memory (--mem:
    SLURM_MEM_PER_NODE, MiB), 60% of that, the job's own however large the node."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.6 * stats["bytes_limit"])
    allocated = os.environ.get("SLURM_MEM_PER_NODE", "")
    if allocated.isdigit():
        return int(0.6 * int(allocated) * 2**20)
    return int(0.25 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def chunk_size_for(spec: Spec, n_runs: int, requested, max_auto: int, n_devices: int = 1) -> int:
    """Models per compiled program. `auto` fits the memory estimate of each of the n_devices
    (max_auto models per device at most); chunks of one bucket are made equal (the last one
    padded) so the bucket compiles once, and a multiple of n_devices so each device gets a share."""
    if requested == "auto":
        room = device_memory_budget() - shared_bytes(spec)
        size = n_devices * max(1, min(max_auto, room // bytes_per_model(spec)))
    else:
        size = int(requested)
    return grid.even_chunk_size(n_runs, size, n_devices)


def segment_steps(spec: Spec, requested: int | None = None) -> int:
    """Steps per advance: `requested` (default DEFAULT_SEGMENT), at most spec.steps; with
    train.log_every the largest length <= that which divides log_every, so every logged step
    ends a segment."""
    segment = min(requested or DEFAULT_SEGMENT, spec.steps)
    if spec.log_every:
        segment = max(k for k in range(1, min(segment, spec.log_every) + 1) if spec.log_every % k == 0)
    return segment


def chunk_function(fn: Callable, size: int, vmap_group: int | None) -> Callable:
    """`fn` of one model (all arguments per model) as a function of `size` models on one
    device: `vmap_group` models side by side (vmapped), the groups one after another (lax.map);
    None: all of them side by side. (On a CPU, batched matmuls can be slower than one model's:
    docs/benchmarks.md measures both.)"""
    if vmap_group is None or vmap_group >= size:
        return jax.vmap(fn)

    def on_device(*args):
        return jax.lax.map(lambda a: fn(*a), args, batch_size=None if vmap_group == 1 else vmap_group)
    return on_device


def on_devices(fn: Callable, mesh: Mesh, in_specs: tuple) -> Callable:
    """`fn` of one device's share of the models as a function of the whole chunk: with several
    devices a shard_map, so that each device runs `fn` on its own models and nothing else (no
    program may hold a collective: the models are independent, and a partitioner left to itself
    gathers what it cannot split, e.g. the metrics' FFT, onto every device); with one device
    `fn` itself, the program it always was (the same bits)."""
    if mesh.size == 1:
        return fn
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec("model"))


def measure_group(devices: list, vmap_group: int | None) -> int | None:
    """Models measured side by side per device. On a CPU with several devices, one at a time:
    there the devices' programs run together on XLA's intra-op thread pool (one thread per
    core), and jaxlib's batched LAPACK kernels (the SVD of circularity's principal components)
    split their batch over that same pool and block until it is done; with every pool thread
    blocked so in one device's SVD, nothing runs the pieces, and the sweep hung forever in the
    final measurement (docs/scale-out.md, Several devices). A batch of one is not split.
    Training holds no LAPACK call: it keeps `vmap_group`."""
    if len(devices) > 1 and devices[0].platform == "cpu":
        return 1
    return vmap_group


def abstract_inputs(chunk_size: int) -> tuple:
    """Shapes of a chunk's per-model inputs: init keys and HParams (leading axis = model)."""
    return jax.ShapeDtypeStruct((chunk_size,), jax.random.key(0).dtype), HParams.abstract((chunk_size,))


@dataclasses.dataclass(frozen=True)
class ChunkProgram:
    """A bucket's Program compiled for `size` models: init(keys, hp), advance(state, keys, hp,
    start) (state donated), measure(state, hp)."""
    init: Callable
    advance: Callable
    measure: Callable
    size: int
    segment: int
    steps: int
    log_every: int | None
    models: NamedSharding  # the model axis split over the devices
    state: Any  # the state's abstract pytree (jax.ShapeDtypeStruct leaves): what a saved one must fit

    def fits(self, resume: Resume) -> str | None:
        """None if a saved state fits this program's state, else why not (a checkpoint written
        by another phasescan or model, or edited by hand)."""
        want = jax.tree_util.tree_leaves(self.state)
        if len(resume.leaves) != len(want):
            return f"{len(resume.leaves)} arrays, this program's state has {len(want)}"
        for i, (got, spec) in enumerate(zip(resume.leaves, want)):
            if tuple(np.shape(got)) != tuple(spec.shape) or np.asarray(got).dtype != spec.dtype:
                return (f"array {i} is {np.asarray(got).dtype}{list(np.shape(got))}, this program's is "
                        f"{spec.dtype}{list(spec.shape)}")
        return None


def compile_chunk(spec: Spec, chunk_size: int, metric_opts: dict, devices: list | None = None,
                  vmap_group: int | None = None, segment: int | None = None) -> ChunkProgram:
    """The bucket's programs, compiled ahead of time so compile time is measured on its own.

    The model axis is split over `devices` (default: the default device) with a 1-D mesh:
    models are independent, so each device trains and measures its share with no communication
    (on_devices: no program holds a collective)."""
    devices = devices or jax.devices()[:1]
    if chunk_size % len(devices):
        raise ValueError(f"chunk_size={chunk_size} is not a multiple of {len(devices)} devices")
    mesh = Mesh(np.asarray(devices), ("model",))
    models, same = NamedSharding(mesh, PartitionSpec("model")), NamedSharding(mesh, PartitionSpec())
    program: Program = make_program(spec, segment_steps(spec, segment), metric_opts)
    share = chunk_size // len(devices)  # each device's models
    per_model = PartitionSpec("model")
    keys, hp = abstract_inputs(chunk_size)
    # Everything the three programs are built from, for the traced-program cache's key.
    fields = (repr(spec), chunk_size, sorted(metric_opts.items()), vmap_group, program.segment)
    key = lambda name: compile_cache.program_key(name, fields, devices)
    init, state = compile_cache.compile_program(
        on_devices(chunk_function(program.init, share, vmap_group), mesh, (per_model,) * 2), (keys, hp),
        in_shardings=models, out_shardings=models, key=key("init"))

    def advance(state, keys, hp, start):  # `start` is shared by the chunk: not vmapped
        return chunk_function(lambda s, k, h: program.advance(s, k, h, start), share, vmap_group)(
            state, keys, hp)
    start = jax.ShapeDtypeStruct((), jnp.int32)
    # Donating the state lets each segment update it in place (a CPU backend may ignore it).
    advance, _ = compile_cache.compile_program(
        on_devices(advance, mesh, (per_model,) * 3 + (PartitionSpec(),)), (state, keys, hp, start),
        in_shardings=(models, models, models, same), out_shardings=models,
        donate_argnums=0 if devices[0].platform != "cpu" else (), key=key("advance"))
    measure, _ = compile_cache.compile_program(
        on_devices(chunk_function(program.measure, share, measure_group(devices, vmap_group)),
                   mesh, (per_model,) * 2), (state, hp),
        in_shardings=models, out_shardings=models, key=key("measure"))
    return ChunkProgram(init=init, advance=advance, measure=measure,
                        size=chunk_size, segment=program.segment, steps=spec.steps,
                        log_every=spec.log_every or None, models=models, state=state)


def host(tree, n: int):
    """Device arrays -> host numpy arrays of the first n models. It waits for them first in
    block_until_ready, where a signal's Python handler still runs (a Ctrl-C is heard while the
    device computes); the copy's own wait does not let it run."""
    tree = jax.block_until_ready(tree)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], jax.device_get(tree))


@dataclasses.dataclass
class Resume:
    """Where a chunk stopped: the step reached, its state's leaves (host arrays, all `size`
    models) and the history measured so far (one dict per logged step)."""
    step: int
    leaves: list
    logged: list


def run_chunk(program: ChunkProgram, runs: list[dict], chunk_size: int, keep_params: bool = False,
              on_segment: Callable | None = None, resume: Resume | None = None):
    """Train and measure `runs` (padded to the compiled size). Returns host metric arrays of the
    real runs (with train.log_every, their history under HISTORY_PREFIX, shape (runs, logged
    steps, ...)), and with `keep_params` also their parameters (leading axis = run).

    `on_segment(step, progress_steps, state_fn)` is called after each segment: `state_fn()`
    gives a Resume to save. `resume` continues a chunk from such a state."""
    padded = runs + [runs[-1]] * (chunk_size - len(runs))
    keys = jax.vmap(jax.random.key)(jnp.asarray([r["seed"] for r in padded], dtype=jnp.uint32))
    keys, hp = jax.device_put((keys, HParams.from_runs(padded)), program.models)
    n = len(runs)
    measure = lambda state: host(program.measure(state, hp), chunk_size)
    state = program.init(keys, hp)
    if resume is None:
        step, logged = 0, ([measure(state)] if program.log_every else [])
    else:
        tree = jax.tree_util.tree_structure(state)
        state = jax.device_put(jax.tree_util.tree_unflatten(tree, resume.leaves), program.models)
        step, logged = resume.step, list(resume.logged)
    while step < program.steps:
        state = program.advance(state, keys, hp, jnp.int32(step))
        done = min(step + program.segment, program.steps) - step
        step += done
        if program.log_every and step % program.log_every == 0:
            logged.append(measure(state))
        if on_segment is not None:
            on_segment(step, done, lambda: Resume(step, jax.tree_util.tree_leaves(host(state, chunk_size)),
                                                  list(logged)))
    metrics = logged[-1] if logged else measure(state)
    metrics = {k: v[:n] for k, v in metrics.items()}
    if logged:
        metrics |= {HISTORY_PREFIX + name: np.stack([entry[name][:n] for entry in logged], axis=1)
                    for name in logged[0]}
    if not keep_params:
        return metrics
    return metrics, host(state.params, n)


def split_history(metrics: dict) -> tuple[dict, dict]:
    """run_chunk's metrics -> (final metrics, history metrics without the prefix; {} if none)."""
    final = {k: v for k, v in metrics.items() if not k.startswith(HISTORY_PREFIX)}
    logged = {k[len(HISTORY_PREFIX):]: v for k, v in metrics.items() if k.startswith(HISTORY_PREFIX)}
    return final, logged
