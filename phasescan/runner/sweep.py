"""Running a sweep: the config validated once into a Plan -> buckets -> chunks (one compiled
Program per bucket, phasescan/engine/chunk.py, driven segment by segment) -> rows.

Between segments the progress bar moves, a requested stop (Ctrl-C, SIGTERM) is honoured and the
unfinished chunk's state is checkpointed (phasescan/store/checkpoint.py), so a stopped or killed sweep
resumes inside the chunk. Every finished chunk is written to disk (results.write_chunk) before
the next one starts, and a
rerun with the same out_dir skips the runs already done (matched by run_id). Chunks are laid out
over the whole bucket, done or not, so a resumed sweep runs its remaining models in the same
compiled programs as an uninterrupted one and gets the same bits. A chunk that runs the device
out of memory is split in halves and retried (docs/reliability.md). Each chunk's model axis is
split over the local devices (`sweep.devices`); `sweep.num_shards` picks this process's share of
the grid (phasescan/core/shard.py). Refinement (phasescan/analysis/refine.py) trains its added runs through the
same chunk loop, `train_runs`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import pandas as pd

from ..analysis import refine
from ..engine.chunk import (
    Resume,
    chunk_size_for,
    compile_chunk,
    memory_problem,
    run_chunk,
    split_history,
)
from ..engine.train import Spec
from ..core import classify, grid, shard
from ..core.config import ConfigError, check_options, identity_differences, is_int
from ..core.progress import Progress
from ..store import checkpoint, history, results, tracking, weights
from . import summary

log = logging.getLogger("phasescan")

def sweep_devices(sweep: dict) -> list:
    """The local devices each chunk is sharded over: sweep.devices = null (all) or a count."""
    available = jax.local_devices()
    n = sweep.get("devices")
    if n is None:
        return available
    if not is_int(n) or not 1 <= n <= len(available):
        raise ConfigError(f"sweep.devices={n!r}: must be null (all {len(available)} local "
                          f"devices) or an integer in 1..{len(available)}")
    return available[:n]


def sweep_identity(runs: list[dict], cfg: dict) -> str:
    """What makes two sweeps the same: their runs and how they are measured and labelled."""
    identity = {"run_ids": [r["run_id"] for r in runs], "metrics": cfg["metrics"],
                # a threshold added later, at its default, is left out: older folders resume
                "classify": classify.identity(cfg["classify"])}
    if any(r.get("log_every") for r in runs):  # a history is part of what the folder holds
        identity["log_every"] = sorted({r["log_every"] or 0 for r in runs})
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def validated_runs(cfg: dict) -> list[dict]:
    """Every run of the sweep (of this shard, with sweep.num_shards > 1) after checking the
    whole config; one ConfigError lists every problem (fields, axes, seeds, options, devices,
    shards) before anything is written."""
    return validated_grid(cfg)[1]


def validated_grid(cfg: dict) -> tuple[list[dict], list[dict]]:
    """(every run of the grid, this shard's runs), validated as validated_runs says."""
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
    grid_runs = runs
    try:
        runs = shard.select(runs, cfg["sweep"])  # this shard's runs (all of them, unsharded)
    except ConfigError as error:
        problems += error.problems
    for run in {grid.bucket_key(r): r for r in runs}.values():  # one per bucket, before writing
        problem = memory_problem(Spec.from_run(run))
        if problem and problem not in problems:
            problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return grid_runs, runs


@dataclasses.dataclass(frozen=True)
class Plan:
    """A sweep validated once: the resolved config, this process's runs (grid order; its shard's
    with sweep.num_shards > 1), the devices each chunk is split over, and the identity that an
    out_dir is matched by. Made by `make_plan`; everything after it reads it (read-only)."""
    cfg: dict
    runs: tuple
    devices: tuple
    identity: str
    grid_runs: tuple  # the whole grid (every shard's runs): the chunks are laid out over it


def make_plan(cfg: dict) -> Plan:
    """Validate the whole config (every problem in one ConfigError) and expand it, once."""
    grid_runs, runs = validated_grid(cfg)
    return Plan(cfg, tuple(runs), tuple(sweep_devices(cfg["sweep"])), sweep_identity(runs, cfg),
                tuple(grid_runs))


def as_plan(plan_or_cfg) -> Plan:
    """A Plan, or one made from a config dict (the Python API and the tests pass configs)."""
    return plan_or_cfg if isinstance(plan_or_cfg, Plan) else make_plan(plan_or_cfg)


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


def differences(out_dir: Path, cfg: dict | None) -> str:
    """How the sweep in out_dir differs from cfg, for a refusal: ` (differs in key: old -> new,
    ...)`, or "" when its config.yaml is unreadable or shows no difference."""
    if cfg is None or not (out_dir / results.CONFIG).is_file():
        return ""
    try:
        found = identity_differences(results.parse_config(out_dir / results.CONFIG), cfg)
    except ConfigError:
        return ""
    if not found:
        return ""
    shown = found if len(found) <= 6 else found[:5] + [f"... {len(found) - 5} more"]
    return f" (differs in {'; '.join(shown)})"


def pick_out_dir(out_dir: Path, identity: str, taken: str = "refuse", cfg: dict | None = None) -> Path:
    """out_dir if it is free or holds this sweep (resume). Otherwise refuse, touching nothing
    (naming the fields that differ, from its config.yaml and `cfg`), or with taken="sibling" the
    first of out_dir-2, out_dir-3, ... that is free or holds it."""
    out_dir = Path(out_dir)
    holds = out_dir_holds(out_dir, identity)
    if holds is None:
        return out_dir
    if taken != "sibling":
        raise ConfigError(
            f"out_dir={out_dir}: holds {holds}{differences(out_dir, cfg)}; nothing in it was "
            f"changed. Choose another out_dir, or add out_dir_taken=sibling to start over in a "
            f"fresh folder next to it ({out_dir.name}-2, -3, ...)")
    n = 2
    while out_dir_holds(sibling := out_dir.with_name(f"{out_dir.name}-{n}"), identity) is not None:
        n += 1
    log.info("out_dir %s holds %s: writing to %s instead", out_dir, holds, sibling)
    return sibling


def choose_out_dir(plan: Plan | dict, out_dir: Path) -> Path:
    """Where run_sweep(plan, out_dir) writes (see pick_out_dir)."""
    plan = as_plan(plan)
    return pick_out_dir(out_dir, plan.identity, plan.cfg.get("out_dir_taken", "refuse"), plan.cfg)


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
    # Every invocation, after the manifest: config.yaml is this command's resolved config (the
    # same sweep identity; refinement, plot, ... may differ), so a kill between the two writes
    # is repaired by the next run, and the folder says what its runs.parquet holds.
    results.write_atomic(out_dir / results.CONFIG, lambda tmp: tmp.write_text(cfg_yaml))
    return manifest


def is_out_of_memory(error: Exception) -> bool:
    message = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower())


def programs_of(spec: Spec, metric_opts: dict, size: int, compile_s: dict, devices: list | None = None,
                vmap_group: int | None = None, segment: int | None = None, progress=None):
    """program(n): the bucket's program for n models, compiled on first use and timed into
    compile_s (under repr(spec), or "<spec> x<n>" for the smaller sizes of a split)."""
    programs = {}

    def program(n: int):
        if n not in programs:
            t0 = time.perf_counter()
            programs[n] = compile_chunk(spec, n, metric_opts, devices, vmap_group=vmap_group,
                                        segment=segment)
            compile_s[repr(spec) if n == size else f"{spec!r} x{n}"] = round(time.perf_counter() - t0, 3)
            if progress is not None:
                progress.compiled(time.perf_counter() - t0)
            log.debug("compiled the programs of %d models in %.1f s: training", n, time.perf_counter() - t0)
        return programs[n]
    return program


class Interrupted(KeyboardInterrupt):
    """A stop asked for (Ctrl-C, SIGTERM) and honoured between two segments, the unfinished
    chunk's state saved."""


class StopRequest:
    """Set by the first Ctrl-C or SIGTERM: the sweep stops after the current segment. A second
    one stops at once (KeyboardInterrupt), losing only the unsaved part of the chunk; the
    command line (__main__.SecondSignal) then ends the process at once, even while a device
    program runs, which no KeyboardInterrupt can stop."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s: stopping after this segment (its state is saved); press Ctrl-C again "
                    "to stop at once", self.signal)


@contextlib.contextmanager
def stop_on_signals():
    """A StopRequest installed for SIGINT and SIGTERM while the sweep runs (main thread only),
    and for SIGUSR2 when a Python handler already has it: submitit's, in a SLURM job (the time
    limit nears, or a preemption). That one is called once the state is saved, and checkpoints
    the job and requeues it; the requeued job resumes from the saved state."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    stops = [signal.SIGINT, signal.SIGTERM]
    if callable(signal.getsignal(signal.SIGUSR2)):
        stops.append(signal.SIGUSR2)
    previous = {sig: signal.signal(sig, request) for sig in stops}

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    try:
        # A signal the command line's start-up handler remembered (__main__.StartUpSignal):
        # honoured before anything trains.
        if any(getattr(handler, "fired", None) for handler in previous.values()):
            raise Interrupted("stopped before training")
        yield request
    except Interrupted as stop:
        restore()  # first: the SIGTERM that a requeue brings goes to submitit's handler
        if request.signal == signal.SIGUSR2.name:
            log.warning("%s; SIGUSR2 passed on to the job's handler (submitit: checkpoint, requeue)", stop)
            previous[signal.SIGUSR2](signal.SIGUSR2, None)
        raise
    finally:
        restore()


class Segments:
    """What happens between two segments of a chunk: the progress bar moves, the chunk's state
    is saved every `every` seconds (and when a stop is requested, which then ends the sweep),
    and a chunk with a saved state starts from it."""

    def __init__(self, out_dir: Path, progress: Progress, stop: StopRequest | None, every: float):
        self.out_dir, self.progress, self.stop, self.every = out_dir, progress, stop, every

    def path(self, piece: list[dict], size: int) -> Path:
        return checkpoint.path_of(self.out_dir, [r["run_id"] for r in piece], size)

    def resume(self, piece: list[dict], size: int, program) -> Resume | None:
        """The piece's saved state, if this program can go on from it: a state of its shape,
        saved with any segment length (checkpoint.off_grid). One that does not fit is set aside
        with one line and the chunk starts over."""
        path = self.path(piece, size)
        saved = checkpoint.load(path)
        if saved is None:
            return None
        segment, step, leaves, logged = saved
        resume = Resume(step, leaves, logged)
        why = program.fits(resume) or checkpoint.off_grid(step, segment, program.segment, program.log_every)
        if why:
            aside = checkpoint.set_aside(path)
            print(f"phasescan: {path}: {why}; set aside as {aside.name}, the chunk starts over",
                  file=sys.stderr)
            return None
        log.info("resuming %d model(s) at step %d from %s", len(piece), step, path.relative_to(self.out_dir))
        self.progress.advance(len(piece) * step)
        return resume

    def callback(self, piece: list[dict], size: int, segment: int):
        last_save = time.monotonic()

        def on_segment(step: int, done: int, state_fn) -> None:
            nonlocal last_save
            self.progress.advance(len(piece) * done)
            stopping = self.stop is not None and self.stop.signal is not None
            if stopping or time.monotonic() - last_save >= self.every:
                saved = state_fn()
                checkpoint.save(self.path(piece, size), segment, saved.step, saved.leaves, saved.logged)
                last_save = time.monotonic()
            if stopping:
                raise Interrupted(f"stopped at step {step} of a chunk of {len(piece)} model(s); "
                                  "its state is saved")
        return on_segment

    def finished(self, piece: list[dict], size: int) -> None:
        checkpoint.remove(self.path(piece, size))


def run_pieces(program, runs: list[dict], size: int, keep_params: bool, n_devices: int = 1,
               segments: Segments | None = None):
    """Train `runs` in pieces of `size` models, `program(size)` the compiled program. When the
    device runs out of memory, halve the size (recompiling; a multiple of n_devices, each device
    keeping a share) and go on, down to one model per device.
    Yields (piece, run_chunk's result, size) as each piece finishes, so it can be saved."""
    start = 0
    while start < len(runs):
        piece = runs[start: start + size]
        try:
            compiled = program(size)
            hooks = {} if segments is None else {
                "on_segment": segments.callback(piece, size, compiled.segment),
                "resume": segments.resume(piece, size, compiled)}
            result = run_chunk(compiled, piece, size, keep_params=keep_params, **hooks)
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


def new_progress(runs: list[dict], done_ids: set[str], cfg: dict | None = None,
                 devices: list | None = None) -> Progress:
    """The bar; with cfg and devices, its ETA before the first segment is the plan's estimate."""
    todo = [r for r in runs if r["run_id"] not in done_ids]
    estimate = summary.estimate_s(cfg, devices, todo) if cfg is not None and devices else None
    return Progress(len(runs), sum(r["steps"] for r in runs), done_models=len(runs) - len(todo),
                    done_steps=sum(r["steps"] for r in runs if r["run_id"] in done_ids),
                    estimate_s=estimate)


def run_sweep(plan: Plan | dict, out_dir: Path, cfg_yaml: str | None = None,
              record=None) -> pd.DataFrame:
    """Train and measure every run of the sweep into out_dir; return the runs table.
    cfg_yaml: the text of config.yaml (the command line's, comments and order kept); None = the
    plan's config written out. record: out_dir -> a context manager held while the sweep runs in
    its folder (app.recorded: the invocation and the log file)."""
    plan = as_plan(plan)
    if cfg_yaml is None:
        from omegaconf import OmegaConf
        cfg_yaml = OmegaConf.to_yaml(OmegaConf.create(plan.cfg))
    out_dir = pick_out_dir(out_dir, plan.identity, plan.cfg.get("out_dir_taken", "refuse"), plan.cfg)
    with results.locked(out_dir):  # one process per folder
        manifest = prepare_out_dir(out_dir, cfg_yaml, plan.identity)  # first: the folder is this sweep's
        with record(out_dir) if record else contextlib.nullcontext():
            return record_sweep(plan, out_dir, manifest)


def record_sweep(plan: Plan, out_dir: Path, manifest: dict) -> pd.DataFrame:
    """run_sweep's work, with out_dir picked, locked and prepared (its manifest read)."""
    cfg, runs, devices = plan.cfg, list(plan.runs), list(plan.devices)
    done_ids = done_run_ids(out_dir)
    todo = [r for r in runs if r["run_id"] not in done_ids]
    # every CPU that trained part of the folder: a study resumed on another CPU is bit for bit
    # on none of them (results.cpu_model)
    cpus = list(dict.fromkeys(manifest.get("cpus", [manifest["cpu"]] if "cpu" in manifest else [])
                              + [results.cpu_model()]))
    manifest.update(results.environment(), sweep=cfg["sweep"].get("name"), n_runs=len(runs), cpus=cpus,
                    devices_used=len(devices),
                    # the sweep's own runs (refinement adds its own): chunks of others are skipped
                    run_ids=sorted(set(manifest.get("run_ids", [])) | {r["run_id"] for r in runs}),
                    resumes=manifest["resumes"] + 1, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    finished=None)
    manifest.setdefault("compile_s", {})
    results.write_manifest(out_dir, manifest)
    if len(todo) < len(runs):
        log.info("resuming %s: %d of %d runs already done", out_dir, len(runs) - len(todo), len(runs))

    start = time.perf_counter()
    track = tracking.sink(cfg, out_dir)  # None with tracking=none
    with stop_on_signals() as stop:
        progress = new_progress(runs, done_ids, cfg, devices)
        compiled_before = sum(manifest["compile_s"].values())
        try:
            train_runs(cfg, out_dir, runs, done_ids, manifest, progress, devices, stop, track,
                       layout=list(plan.grid_runs))
        finally:
            progress.close()
        # the next plan's time estimate: training seconds of what was trained (compiling apart)
        summary.record_rate(cfg, devices, todo, time.perf_counter() - start
                            - (sum(manifest["compile_s"].values()) - compiled_before))
        wanted = {r["run_id"] for r in runs}
        if refine.options(cfg):
            refined = refine.run(cfg, out_dir, lambda extra: train_new_runs(cfg, out_dir, extra, manifest,
                                                                            devices, stop, track))
            wanted |= set(refined["run_id"])
        else:
            refine.forget(out_dir)

    # runs.parquet holds what config.yaml describes: the grid and this command's refinement. Runs
    # an earlier command refined with other options stay in chunks/ (and return with them).
    frame = results.assemble(out_dir, wanted)
    history.assemble(out_dir, wanted)
    if track:
        track.finish(frame)  # and the runs done before tracking was on or before a crash
    manifest.update(wall_s=round(manifest.get("wall_s", 0) + time.perf_counter() - start, 3),
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S"), n_done=len(frame))
    results.write_manifest(out_dir, manifest)
    return frame


def train_new_runs(cfg: dict, out_dir: Path, runs: list[dict], manifest: dict,
                   devices: list, stop: StopRequest | None = None, track=None) -> pd.DataFrame:
    """Train the runs not yet in out_dir (e.g. refinement's); return the rows of all `runs`."""
    manifest["run_ids"] = sorted(set(manifest.get("run_ids", [])) | {r["run_id"] for r in runs})
    results.write_manifest(out_dir, manifest)
    done_ids = done_run_ids(out_dir)
    progress = new_progress(runs, done_ids)
    try:
        train_runs(cfg, out_dir, runs, done_ids, manifest, progress, devices, stop, track)
    finally:
        progress.close()
    wanted = {r["run_id"] for r in runs}
    frame = results.read_chunks(out_dir)
    return frame[frame["run_id"].isin(wanted)].reset_index(drop=True)


def done_run_ids(out_dir: Path) -> set[str]:
    """The run_ids whose rows are already in out_dir's chunks (resume skips them)."""
    done = results.read_chunks(out_dir)
    return set() if done is None else set(done["run_id"])


def train_runs(cfg: dict, out_dir: Path, runs: list[dict], done_ids: set[str], manifest: dict,
               progress: Progress, devices: list, stop: StopRequest | None = None,
               track: tracking.WandbSink | None = None, layout: list[dict] | None = None) -> None:
    """Train, measure, label and write the runs not in done_ids, chunk by chunk (one compiled
    program per bucket, its model axis split over `devices`), segment by segment; `track`
    (tracking=wandb) logs each piece's runs from the files just written. The chunks are laid out
    over `layout` (default `runs`): the whole grid, so that a shard's chunks are the unsharded
    sweep's (shard.units)."""
    sweep_cfg = cfg["sweep"]
    segments = Segments(out_dir, progress, stop, sweep_cfg.get("checkpoint_every", 300))
    ids = {r["run_id"] for r in runs}
    todo = ids - done_ids
    buckets = [b for b in grid.buckets(layout or runs).values() if any(r["run_id"] in todo for r in b)]
    for number, bucket_runs in enumerate(buckets, 1):
        spec = Spec.from_run(bucket_runs[0])
        # Sized from the whole bucket, done or not, every shard's: the same programs as one
        # uninterrupted process.
        size = chunk_size_for(spec, len(bucket_runs), sweep_cfg["chunk_size"],
                              sweep_cfg["max_chunk_size"], len(devices))
        progress.note(f"bucket {number} of {len(buckets)}: {sum(r['run_id'] in ids for r in bucket_runs)} models, p={spec.p} "
                      f"d_model={spec.d_model} steps={spec.steps} (compiling, then training)")
        # the dynamics' learned threshold is the label's (train.DynamicsState)
        engine_opts = cfg["metrics"] | {"learned_acc": cfg["classify"]["min_test_acc"]}
        program = programs_of(spec, engine_opts, size, manifest["compile_s"], devices,
                              sweep_cfg.get("vmap_group"), sweep_cfg.get("segment_steps"), progress)
        fits = size  # models per program that fit the device (halved on running out of memory)
        for i in range(0, len(bucket_runs), size):
            chunk = [r for r in bucket_runs[i: i + size] if r["run_id"] in todo]
            if not chunk:
                continue
            to_save = lambda run: weights.should_save(run, cfg["save_weights"], sweep_cfg["seed_start"])
            keep = any(map(to_save, chunk))
            for piece, result, fits in run_pieces(program, chunk, fits, keep, len(devices), segments):
                written = record(out_dir, piece, result, keep, to_save, cfg["classify"])
                segments.finished(piece, fits)
                progress.models_done(len(piece))
                if track:
                    track.log_chunk(*written)


def record(out_dir: Path, piece: list[dict], result, keep: bool, to_save,
           thresholds: dict) -> tuple[Path, Path | None]:
    """Write a finished piece: weights first, then its history, then its rows (a chunk whose
    rows are on disk has its other files too). Returns (rows file, history file or None)."""
    metrics, params = result if keep else (result, None)
    for j, run in enumerate(piece):
        if to_save(run):
            weights.save(weights.path_of(out_dir, run["run_id"]),
                         weights.to_arrays(weights.model_at(params, j), run))
    metrics, logged = split_history(metrics)
    curves = history.write_chunk(out_dir, history.rows(piece, logged, thresholds)) if logged else None
    return results.write_chunk(out_dir, results.rows(piece, metrics, thresholds)), curves
