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
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..spec.tasks import INPUT_FORMATS
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
        room = device_memory_budget() - shared_bytes(spec)
        size = n_devices * max(1, min(max_auto, room // bytes_per_model(spec)))
    else:
        size = int(requested)
    n_chunks = math.ceil(n_runs / size)
    return n_devices * math.ceil(math.ceil(n_runs / n_chunks) / n_devices)


def segment_steps(spec: Spec, requested: int | None = None) -> int:
    """Steps per advance: `requested` (default DEFAULT_SEGMENT), at most spec.steps; with
    train.log_every the largest length <= that which divides log_every, so every logged step
    ends a segment."""
    segment = min(requested or DEFAULT_SEGMENT, spec.steps)
    if spec.log_every:
        segment = max(k for k in range(1, min(segment, spec.log_every) + 1) if spec.log_every % k == 0)
    return segment


def chunk_function(fn: Callable, chunk_size: int, n_devices: int, vmap_group: int | None) -> Callable:
    """`fn` of one model (all arguments per model) as a function of the chunk: each device
    handles its share, `vmap_group` models side by side (vmapped), the groups one after another
    (lax.map); None: the whole share side by side. (On a CPU, batched matmuls can be slower
    than one model's: docs/benchmarks.md measures both.)"""
    per_device = chunk_size // n_devices
    if vmap_group is None or vmap_group >= per_device:
        return jax.vmap(fn)

    def on_device(*args):
        return jax.lax.map(lambda a: fn(*a), args, batch_size=None if vmap_group == 1 else vmap_group)
    if n_devices == 1:
        return on_device

    def chunk(*args):  # (chunk,) -> (device, share): the sharded axis stays the leading one
        by_device = lambda x: x.reshape(n_devices, per_device, *x.shape[1:])
        out = jax.vmap(on_device)(*jax.tree_util.tree_map(by_device, args))
        return jax.tree_util.tree_map(lambda x: x.reshape(chunk_size, *x.shape[2:]), out)
    return chunk


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


def compile_chunk(spec: Spec, chunk_size: int, metric_opts: dict, devices: list | None = None,
                  vmap_group: int | None = None, segment: int | None = None) -> ChunkProgram:
    """The bucket's programs, compiled ahead of time so compile time is measured on its own.

    The model axis is split over `devices` (default: the default device) with a 1-D mesh:
    models are independent, so each device trains its share with no communication."""
    devices = devices or jax.devices()[:1]
    if chunk_size % len(devices):
        raise ValueError(f"chunk_size={chunk_size} is not a multiple of {len(devices)} devices")
    mesh = Mesh(np.asarray(devices), ("model",))
    models, same = NamedSharding(mesh, PartitionSpec("model")), NamedSharding(mesh, PartitionSpec())
    program: Program = make_program(spec, segment_steps(spec, segment), metric_opts)
    batched = lambda fn: chunk_function(fn, chunk_size, len(devices), vmap_group)
    keys, hp = abstract_inputs(chunk_size)
    init = jax.jit(batched(program.init), in_shardings=models, out_shardings=models)
    state = jax.eval_shape(init, keys, hp)

    def advance(state, keys, hp, start):  # `start` is shared by the chunk: not vmapped
        return batched(lambda s, k, h: program.advance(s, k, h, start))(state, keys, hp)
    start = jax.ShapeDtypeStruct((), jnp.int32)
    # Donating the state lets each segment update it in place (a CPU backend may ignore it).
    advance = jax.jit(advance, in_shardings=(models, models, models, same), out_shardings=models,
                      donate_argnums=0 if devices[0].platform != "cpu" else ())
    measure = jax.jit(batched(program.measure), in_shardings=models, out_shardings=models)
    return ChunkProgram(init=init.lower(keys, hp).compile(),
                        advance=advance.lower(state, keys, hp, start).compile(),
                        measure=measure.lower(state, hp).compile(),
                        size=chunk_size, segment=program.segment, steps=spec.steps,
                        log_every=spec.log_every or None, models=models)


def host(tree, n: int):
    """Device arrays -> host numpy arrays of the first n models."""
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
