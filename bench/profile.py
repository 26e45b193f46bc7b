"""Where the time goes, and the small single-question measurements: one command, sub-commands.

    python -m bench.profile process OVERRIDES        a whole `python -m phasescan` process, phase by phase
    python -m bench.profile step [--p --d-model ...] the pieces of one training step, the step's kernels
    python -m bench.profile batched-dot [--p ...]    a matmul vmapped over models against a plain one
    python -m bench.profile segments [OVERRIDES]     what training a chunk in segments costs
    python -m bench.profile logging [--time] OVERRIDES   what train.log_every and the circles cost
    python -m bench.profile compile-cache [OVERRIDES]    compile seconds: no cache, cold, warm cache
    python -m bench.profile precision RESULTS_DIR    what train.precision changes in the science
    python -m bench.profile layout [OVERRIDES]       how much chunk size and device count move the numbers

`python -m bench.profile SUB-COMMAND --help` describes each. The figures they printed are in
docs/benchmarks.md (logging: docs/usage.md "Cost of logging", docs/metrics.md "Circles: what they cost").
The timers are shared: a jitted call's best of N is bench.throughput.best_time, a chunk's training
time `alternating_best` below, a whole process bench.cpu_vs_torch.timed.

These were separate scripts before (git history keeps them): bench.process_profile (now
`process`), bench.profile_step (`step`), bench.batched_dot (`batched-dot`), bench.segment_overhead
(`segments`), bench.logging_cost (`logging`), bench.compile_cache (`compile-cache`) and
bench.precision_science (`precision`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# `process` counts from here: keep this module's top-level imports to the standard library (JAX,
# Hydra and phasescan are imported inside the sub-commands, so the timeline shows their cost).
T0 = time.perf_counter()

if __package__ in (None, ""):  # `python bench/profile.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.profile"


# ---------------------------------------------------------------------------------------------
# shared: a chunk's training time, several programs alternating


def alternating_best(programs: dict, runs: list[dict], repeats: int) -> dict:
    """{name: (wall s, process CPU s)}: each compiled chunk program trains `runs` (chunk.run_chunk,
    compilation excluded), the programs alternating `repeats` times so a drift of the machine's
    speed hits all alike; best of the repeats, wall and CPU separately."""
    from phasescan.engine.chunk import run_chunk
    best: dict = {}
    for _ in range(repeats):
        for name, program in programs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run_chunk(program, runs, len(runs))
            took = (time.perf_counter() - wall, time.process_time() - cpu)
            best[name] = tuple(min(a, b) for a, b in zip(best.get(name, took), took))
    return best


def first_bucket(overrides: list[str]):
    """(config, the sweep's first bucket's runs, its train.Spec)."""
    from phasescan.engine.train import Spec
    from phasescan.core import grid
    from phasescan.core.config import compose
    cfg = compose(*overrides)
    runs = next(iter(grid.buckets(grid.expand(cfg)).values()))
    return cfg, runs, Spec.from_run(runs[0])


# ---------------------------------------------------------------------------------------------
# process: a whole `python -m phasescan` process, phase by phase

PROCESS_DOC = """Where a whole `python -m phasescan` process spends its time: a timeline of its phases.

    python -m bench.profile process task.p=23 'sweep.axes.d_model=[32]' \\
        'sweep.axes.attn_rate=linspace(0,1,8)' sweep.seeds=2 train.steps=1000 plot=false out_dir=/tmp/x

Runs phasescan's own command line in this process (the same overrides) with timers around its
phases, and prints to stderr, in seconds since this module was imported:
  * imports (phasescan's command, Hydra), Hydra composing the config, the sweep modules' imports;
  * the plan (validation, grid, JAX's backend start-up: the first jax.devices());
  * per compiled program (init, advance, measure): tracing, lowering to StableHLO, and XLA's
    compilation or the persistent cache's load (JAX's own monitoring events say which);
  * per chunk: init, each advance segment and the measurement, each waited for
    (block_until_ready), then writing the chunk's rows, runs.parquet, the figures.
The waits make the device work visible per phase; they cost nothing measurable here (the host
waits for each result anyway). Only for profiling: the results are the command's own. It patches
phasescan's modules in this process: run it as its own process, not from other code."""

EVENTS: list[tuple[float, str]] = []
DURATIONS: list[tuple[float, str, float]] = []


def process_start() -> float | None:
    """Seconds between the process's start and T0 (the interpreter's own start-up), from /proc."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK") - (time.perf_counter() - T0)
    except (OSError, ValueError, IndexError):
        return None


def mark(what: str) -> None:
    EVENTS.append((time.perf_counter() - T0, what))


def with_timer(what: str, fn, block: bool = False):
    """fn, recording (start, what, seconds) of each call in DURATIONS (block: wait for its result)."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        if block:
            import jax
            out = jax.block_until_ready(out)
        DURATIONS.append((t - T0, what, time.perf_counter() - t))
        return out
    return wrapper


def install_timers() -> None:
    import dataclasses

    import jax.monitoring

    from phasescan.engine import chunk
    from phasescan.runner import sweep
    from phasescan.store import results

    def on_duration(event: str, seconds: float, **kwargs) -> None:
        names = {"/jax/core/compile/jaxpr_trace_duration": "  trace (jaxpr)",
                 "/jax/core/compile/jaxpr_to_mlir_module_duration": "  lower (StableHLO)",
                 "/jax/core/compile/backend_compile_duration": "  XLA compile",
                 "/jax/compilation_cache/cache_retrieval_time_sec": "  cache load"}
        if event in names:
            DURATIONS.append((time.perf_counter() - T0 - seconds, names[event], seconds))

    def on_event(event: str, **kwargs) -> None:
        if "compilation_cache" in event and ("hit" in event or "miss" in event):
            mark(f"  {event}")
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

    sweep.compile_chunk = with_timer("compile_chunk (3 programs)", chunk.compile_chunk)
    run_chunk = chunk.run_chunk

    def run_chunk_timed(program, *args, **kwargs):
        program = dataclasses.replace(program, init=with_timer("init", program.init, True),
                                      advance=with_timer("advance (segment)", program.advance, True),
                                      measure=with_timer("measure (metrics)", program.measure, True))
        return with_timer("run_chunk", run_chunk)(program, *args, **kwargs)
    sweep.run_chunk = run_chunk_timed
    for module, name, what in [(sweep, "make_plan", "make_plan (validation, JAX backend start)"),
                               (sweep, "record", "write the chunk's rows (parquet)"),
                               (results, "assemble", "assemble runs.parquet")]:
        if hasattr(module, name):  # the modules change; time what is there
            setattr(module, name, with_timer(what, getattr(module, name)))


def print_timeline() -> None:
    rows = sorted([(t, what, None) for t, what in EVENTS] + DURATIONS, key=lambda r: r[0])
    start = process_start()
    before = f"{start:.2f} s before 0" if start is not None else "unknown"
    print(f"\nprocess start: {before} (the interpreter's own start-up)", file=sys.stderr)
    print(f"{'at s':>8}  {'took s':>7}  phase", file=sys.stderr)
    for t, what, seconds in rows:
        took = f"{seconds:7.3f}" if seconds is not None else " " * 7
        print(f"{t:8.3f}  {took}  {what}", file=sys.stderr)


def process(args) -> int:
    mark("interpreter up, profile module imported")
    from phasescan import __main__ as cli_module
    mark("import phasescan.__main__ (Hydra, phasescan.core.config)")
    from phasescan.runner import sweep  # noqa: F401  (what main() imports after Hydra's parsing)
    mark("import phasescan.runner.sweep (JAX, flax, optax, pandas)")
    install_timers()
    sys.argv = ["python -m phasescan", *args.overrides]
    code = 0
    try:
        cli_module.cli()
    except SystemExit as stop:
        code = stop.code or 0
    mark("command returned")
    print_timeline()
    return code


# ---------------------------------------------------------------------------------------------
# step: the pieces of one model's training step

STEP_DOC = """Where one training step spends its time (default: the paper's model, p 59, d 128, 1 layer).

Times, each a separately compiled program (best of --repeats calls, after a warm-up):
  forward          the loss over the model's train pairs (one model)
  forward+backward value_and_grad of that loss
  adamw update     optax.adamw's update + apply_updates, given gradients
  step             forward+backward+update: the sequential way's jitted step (donated buffers)
  step + host sync the same, plus reading the loss back to the host every step (PyTorch .item())
  dispatch         an empty jitted call: the fixed cost the Python loop pays per step
  scan, 1 model    `steps` steps inside one lax.scan (no Python between steps)
  scan, vmapped    `models` models x `steps` steps: jit(vmap(scan)), the engine's shape
and the compiled step's HLO: fusions, dot (matmul) ops and the other kernels, with the share
of matmul FLOPs spent in the attention einsums at context 2."""


def hlo_summary(compiled) -> dict:
    """Kernels of a compiled program: the ops of its entry computation (after fusion), and the
    dot (matmul) ops anywhere in the module, fused or not."""
    import re
    text = compiled.as_text()
    entry = text[text.index("ENTRY"):]
    entry = entry[: entry.index("\n}")]
    counts: dict[str, int] = {}
    for op in re.findall(r"= (?:\([^=]*?\)|\S+) ([a-z][\w-]*)\(", entry):
        counts[op] = counts.get(op, 0) + 1
    return {"entry_ops": counts, "fusions": counts.get("fusion", 0),
            "dots_in_module": len(re.findall(r" dot\(", text))}


def attention_flop_share(spec) -> float:
    """Share of a forward pass's matmul FLOPs in the scores / mixing einsums (context 2)."""
    from bench.throughput import flops_per_step
    d, n_ctx, L = spec.d_model, 2, spec.n_layers
    attn = sum(4 * (1 if i == L - 1 else n_ctx) * n_ctx * d for i in range(L))
    return attn / flops_per_step(spec)["forward_per_example"]


def step(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from bench.throughput import (
        best_time,
        flops_per_step,
        one_model,
        sequential_programs,
    )
    from phasescan.engine import train
    from phasescan.core import grid
    from phasescan.core.config import compose

    cfg = compose(f"task.p={args.p}", f"model.d_model={args.d_model}", f"model.n_layers={args.n_layers}",
                  f"train.precision={args.precision}", f"sweep.seeds={args.models}",
                  "metrics.grad_sym_triples=50")
    runs = grid.expand(cfg)[: args.models]  # the base sweep has several attention rates: keep N
    spec = train.Spec.from_run(runs[0])
    fns = sequential_programs(spec, cfg["metrics"])
    key, hp = one_model(runs[0])
    params, opt_state, split = jax.jit(fns["init"])(key, hp)
    flops = flops_per_step(spec)

    grads = params  # the update's cost does not depend on the gradients' values
    optimizer = optax.adamw(train.warmup_schedule(hp), b1=hp.beta1, b2=hp.beta2,
                            eps=train.ADAM_EPS, weight_decay=hp.weight_decay)

    def adam(grads, opt_state, params):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step_compiled = jax.jit(fns["step"], donate_argnums=(0, 1)).lower(params, opt_state, hp, split).compile()

    def copy(tree):
        return jax.tree_util.tree_map(jnp.copy, tree)

    def step_loop(n, sync):  # the Python loop over steps (donation consumes its inputs)
        p_, s_ = copy(params), copy(opt_state)
        jax.block_until_ready((p_, s_))
        t0 = time.perf_counter()
        for _ in range(n):
            p_, s_, l_ = step_compiled(p_, s_, hp, split)
            if sync:
                float(l_)
        jax.block_until_ready(p_)
        return (time.perf_counter() - t0) / n

    def scan_steps(params, opt_state, hp):
        def body(carry, _):
            p_, s_ = carry
            p_, s_, l_ = fns["step"](p_, s_, hp, split)
            return (p_, s_), l_
        return jax.lax.scan(body, (params, opt_state), None, length=args.steps)[1]

    hps = train.HParams.from_runs(runs)
    keys = jax.vmap(jax.random.key)(jnp.asarray([r["seed"] for r in runs], dtype=jnp.uint32))
    vparams, vopt, _ = jax.vmap(jax.jit(fns["init"]))(keys, hps)

    def vscan(vparams, vopt, hps):
        return jax.vmap(scan_steps)(vparams, vopt, hps)

    r = args.repeats
    times = {
        "forward": best_time(jax.jit(fns["loss"]), params, hp, split, repeats=r),
        "forward+backward": best_time(jax.jit(jax.value_and_grad(fns["loss"])), params, hp, split, repeats=r),
        "adamw update": best_time(jax.jit(adam), grads, opt_state, params, repeats=r),
        "step (python loop)": min(step_loop(args.steps, False) for _ in range(2)),
        "step + host sync": min(step_loop(args.steps, True) for _ in range(2)),
        "dispatch (empty call)": best_time(jax.jit(lambda x: x + 1), jnp.zeros(()), repeats=50),
        "scan, 1 model": best_time(jax.jit(scan_steps), params, opt_state, hp, repeats=2) / args.steps,
        f"scan, vmapped x{len(runs)}": best_time(jax.jit(vscan), vparams, vopt, hps, repeats=2)
        / (args.steps * len(runs)),
    }
    hlo = hlo_summary(step_compiled)
    print(f"device: {jax.devices()[0].platform} {jax.devices()[0].device_kind}   jax {jax.__version__}   "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"p={spec.p} d_model={spec.d_model} n_layers={spec.n_layers} precision={spec.precision}: "
          f"{flops['step']:.4g} matmul FLOPs per step ({flops['examples']} pairs)")
    step_time = times["step (python loop)"]
    print(f"\n{'piece':<24}{'ms per model-step':>18}{'of step':>9}{'GFLOP/s':>9}")
    for name, t in times.items():
        gflops = flops["step"] / t / 1e9 if name.startswith(("step", "scan")) else float("nan")
        print(f"{name:<24}{t * 1e3:>18.3f}{t / step_time:>9.0%}{gflops:>9.2f}")
    print(f"\ncompiled step HLO: {hlo['fusions']} fusions, {hlo['dots_in_module']} dot ops; "
          f"top-level ops: {dict(sorted(hlo['entry_ops'].items(), key=lambda kv: -kv[1]))}")
    print(f"attention scores + mixing einsums (context 2): {attention_flop_share(spec):.2%} of matmul FLOPs")
    return {"times": times, "hlo": hlo, "flops": flops}


# ---------------------------------------------------------------------------------------------
# batched-dot: does vmapping over models slow the matmuls down?

BATCHED_DOT_DOC = """Does vmapping over models slow the matmuls down? The MLP's W_in matmuls of one
step, as the engine runs them (a batched dot over `models`) and as one model runs them (a plain dot).

forward:         (N, d) @ (d, 4d)          N = p^2 pairs
weight gradient: (N, d)^T @ (N, 4d)        contracts over the pairs: the backward's other matmul
Both in float32 at precision HIGHEST; ms per model, best of 5."""


def batched_dot(args) -> dict:
    import jax
    import jax.numpy as jnp

    from bench.throughput import best_time

    n, d, m = args.p ** 2, args.d_model, args.models
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (m, n, d))
    w = jax.random.normal(kw, (m, d, 4 * d))
    g = jax.random.normal(kg, (m, n, 4 * d))
    hi = "highest"
    pieces = {
        "forward": (jax.jit(jax.vmap(lambda x, w: jnp.dot(x, w, precision=hi))), (x, w),
                    jax.jit(lambda x, w: jnp.dot(x, w, precision=hi)), (x[0], w[0])),
        "weight gradient": (jax.jit(jax.vmap(lambda x, g: jnp.dot(x.T, g, precision=hi))), (x, g),
                            jax.jit(lambda x, g: jnp.dot(x.T, g, precision=hi)), (x[0], g[0])),
    }
    print(f"{jax.devices()[0].platform} {jax.devices()[0].device_kind}  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
          f"N={n} d={d} models={m}")
    out = {}
    for name, (batched, b_args, single, s_args) in pieces.items():
        per_model = best_time(batched, *b_args) / m
        alone = best_time(single, *s_args)
        out[name] = (per_model, alone)
        print(f"{name:<16} vmapped {per_model * 1e3:8.2f} ms/model   alone {alone * 1e3:8.2f} ms   "
              f"ratio {per_model / alone:5.2f}")
    return out


# ---------------------------------------------------------------------------------------------
# segments: what training a chunk in segments costs

SEGMENTS_DOC = """What training a chunk in segments costs: the sweep's first bucket trained with one
device call for all its steps (`sweep.segment_steps` = steps) and with segments of 500 and 100
steps (the host advancing it between them), compilation excluded, best of --repeats, wall and
process CPU. Default: the demo's bucket (sweep=demo)."""


def segments(args) -> dict:
    from phasescan.engine.chunk import compile_chunk
    cfg, runs, spec = first_bucket(args.overrides or ["sweep=demo"])
    programs = {}
    for segment in (int(s) or spec.steps for s in args.segments.split(",")):
        programs[segment] = compile_chunk(spec, len(runs), cfg["metrics"], segment=segment)
    best = alternating_best(programs, runs, args.repeats)
    one_call = best.get(spec.steps) or next(iter(best.values()))
    print(f"{len(runs)} models, p={spec.p} d_model={spec.d_model} steps={spec.steps}; best of "
          f"{args.repeats}, compilation excluded")
    for segment, (wall, cpu) in best.items():
        print(f"segment {segment:>6} steps ({-(-spec.steps // segment):>3} calls): wall {wall:7.2f} s "
              f"({100 * (wall / one_call[0] - 1):+.1f}%), CPU {cpu:7.2f} s "
              f"({100 * (cpu / one_call[1] - 1):+.1f}%)")
    return best


# ---------------------------------------------------------------------------------------------
# logging: what train.log_every (and the circles) cost

LOGGING_DOC = """What `train.log_every` costs: XLA's FLOP count of one measurement against one
training step, and with --time the measured seconds of the first bucket as one chunk, without and
with logging (compilation excluded, the two programs alternating, best of 2). The figures are in
docs/usage.md ("Cost of logging") and docs/metrics.md ("Circles: what they cost")."""


def logging_flops(spec, metric_opts: dict) -> dict:
    """XLA's FLOP count of one measurement and of one training step of one model: the Program's
    `measure`, and its `advance` over a segment of one step."""
    import jax
    import jax.numpy as jnp

    from phasescan.engine.train import HParams, make_program
    program = make_program(spec, 1, metric_opts)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    hp = HParams.abstract()
    state = jax.eval_shape(program.init, key, hp)

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    measure = flops(program.measure, state, hp)
    one_step = flops(program.advance, state, key, hp, jax.ShapeDtypeStruct((), jnp.int32))
    n_logged = spec.steps // spec.log_every + 1 if spec.log_every else 1
    return {"measure_flops": measure, "step_flops": one_step,
            "overhead": (n_logged - 1) * measure / (spec.steps * one_step + measure)}


def logging_cost(args) -> dict:
    import dataclasses

    from phasescan.engine.chunk import compile_chunk
    cfg, runs, spec = first_bucket(args.overrides)
    cost = logging_flops(spec, cfg["metrics"])
    print(f"{spec}\none measurement: {cost['measure_flops']:.4g} FLOPs, one training step: "
          f"{cost['step_flops']:.4g} FLOPs (ratio {cost['measure_flops'] / cost['step_flops']:.3g}); "
          f"logging every {spec.log_every} steps adds {100 * cost['overhead']:.2f}% to the FLOPs")
    if args.time:
        programs = {name: compile_chunk(dataclasses.replace(spec, log_every=k), len(runs), cfg["metrics"])
                    for name, k in (("plain", None), ("logged", spec.log_every))}
        best = alternating_best(programs, runs, repeats=2)
        cost["timed"] = {"models": len(runs)} | {f"{name}_{kind}_s": round(t[i], 3) for name, t in best.items()
                                                 for i, kind in enumerate(("wall", "cpu"))}
        print(cost["timed"])
    return cost


# ---------------------------------------------------------------------------------------------
# compile-cache: compile seconds without, with a cold and with a warm persistent cache

COMPILE_CACHE_DOC = """Compile time of a sweep without the persistent compilation cache, with a cold
(empty) cache and with a warm one (a rerun of the same buckets in a new process), as phasescan
records it in manifest.json (`compile_s`: seconds per bucket). Each measurement is a separate
`python -m phasescan` process writing to its own temporary out_dir, as a rerun or a Hydra
multirun job would be. Default overrides: sweep=demo train.steps=100 plot=false."""


def compile_cache(args) -> dict:
    import json
    import tempfile

    from bench.cpu_vs_torch import timed
    overrides = args.overrides or ["sweep=demo", "train.steps=100", "plot=false"]

    def compile_seconds(cache: str, out_dir: Path) -> float:
        command = [sys.executable, "-m", "phasescan", *overrides, f"compile_cache={cache}", f"out_dir={out_dir}"]
        try:
            timed(command, ROOT)
        except RuntimeError as error:
            sys.exit(f"bench.profile compile-cache: {error}")
        return sum(json.loads((out_dir / "manifest.json").read_text())["compile_s"].values())

    with tempfile.TemporaryDirectory(prefix="phasescan-cache-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "jax-cache"
        times = {"no cache": compile_seconds("null", tmp / "off"),
                 "cold cache": compile_seconds(str(cache), tmp / "cold"),
                 "warm cache": compile_seconds(str(cache), tmp / "warm")}
        n_entries = sum(1 for _ in cache.iterdir())
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}   python -m phasescan {' '.join(overrides)}")
    for name, seconds in times.items():
        print(f"{name:<12}{seconds:>8.2f} s compile (sum over buckets, manifest.json compile_s)")
    print(f"cache entries written: {n_entries}")
    return times


# ---------------------------------------------------------------------------------------------
# precision: what train.precision changes in the science (a results folder; nothing is timed)

PRECISION_DOC = """What train.precision changes in the science: grad_sym / dist_irr / labels per
precision, from a finished sweep's folder (nothing is timed):

    python -m phasescan sweep=model_a_vs_b 'sweep.axes.precision=[float32,tf32,bfloat16]' \\
        out_dir=results/precision
    python -m bench.profile precision results/precision

Prints, per precision and attention rate, the distribution of grad_sym and dist_irr (mean,
std, min, max over seeds) and the algorithm counts, and for every other precision the paired
difference to float32 (the same seed and attention rate, so the same initialisation and split)."""

PRECISION_METRICS = ["grad_sym", "dist_irr"]


def compare_precisions(runs, reference: str = "float32") -> dict:
    """{title: DataFrame}: summary, labels and the paired |difference| to `reference`."""
    import pandas as pd
    m = PRECISION_METRICS
    summary = runs.groupby(["precision", "attn_rate"])[m].agg(["mean", "std", "min", "max"])
    labels = runs.groupby(["precision", "attn_rate"])["algorithm"].value_counts().unstack(fill_value=0)
    keyed = runs.set_index(["precision", "attn_rate", "seed"])[m + ["test_acc"]]
    paired = {}
    present = set(runs["precision"])
    for name in sorted(present - {reference}) if reference in present else []:
        diff = (keyed.loc[name] - keyed.loc[reference]).abs()
        paired[name] = diff.groupby("attn_rate").agg(["mean", "max"])
    paired = pd.concat(paired, names=["precision"]) if paired else pd.DataFrame()
    return {"summary": summary, "labels": labels, "paired_abs_diff_vs_" + reference: paired}


def precision(args) -> dict:
    import pandas as pd

    from phasescan import load
    tables = compare_precisions(load(args.results_dir))
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        for title, table in tables.items():
            print(f"\n{title}\n{table.to_string()}")
    return tables


LAYOUT_DOC = """How much the chunk layout moves a model's numbers: the same sweep (default the tiny
one of docs/scale-out.md: p 13, d 16, 3 attention rates x 2 seeds, 150 steps) trained in chunks
of 6, 3, 2 and 1 models on one device and in chunks of 6 on 2 forced host devices (XLA_FLAGS is
set for this process), each against chunks of 6 on one device: the largest |difference| per
column and how many labels changed. Same chunks, same device count: the same bits
(tests/test_scaleout.py); here, what one sees otherwise."""

LAYOUT_SWEEP = ["sweep=demo", "task.p=13", "train.steps=150", "sweep.axes.d_model=[16]",
                "sweep.axes.attn_rate=[0.0,0.5,1.0]", "sweep.seeds=2", "plot=false"]
LAYOUT_COLUMNS = ["test_acc", "train_loss", "grad_sym", "dist_irr", "circularity", "param_norm",
                  "generalization_delay"]


def layout(args) -> dict:
    import tempfile

    import numpy as np
    import pandas as pd

    from phasescan.runner.sweep import run_sweep
    from phasescan.core.config import compose
    overrides = args.overrides or LAYOUT_SWEEP
    variants = {"chunks of 6, 1 device": ["sweep.chunk_size=6", "sweep.devices=1"],
                **{f"chunks of {k}, 1 device": [f"sweep.chunk_size={k}", "sweep.devices=1"] for k in (3, 2, 1)},
                "chunks of 6, 2 devices": ["sweep.chunk_size=6", "sweep.devices=2"]}
    with tempfile.TemporaryDirectory() as tmp:
        tables = {name: run_sweep(compose(*overrides, *extra), Path(tmp) / str(i))
                  for i, (name, extra) in enumerate(variants.items())}
    base = tables["chunks of 6, 1 device"]
    rows = []
    for name, frame in tables.items():
        row = {"layout": name}
        for col in LAYOUT_COLUMNS:
            row[col] = float(np.nanmax(np.abs(frame[col].to_numpy() - base[col].to_numpy())))
        row["labels changed"] = int((frame["algorithm"] != base["algorithm"]).sum())
        row["phases changed"] = int((frame["learning_phase"] != base["learning_phase"]).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print(f"max |difference| to chunks of 6 on 1 device, {len(base)} models:\n{table.to_string(index=False)}")
    return {"layout": table}


# ---------------------------------------------------------------------------------------------
# the command line


def _overrides(parser: argparse.ArgumentParser, what: str = "phasescan config overrides") -> None:
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=what)


def parser_for(name: str) -> argparse.ArgumentParser:
    """The argument parser of one sub-command."""
    from_doc = {"process": PROCESS_DOC, "step": STEP_DOC, "batched-dot": BATCHED_DOT_DOC,
                "segments": SEGMENTS_DOC, "logging": LOGGING_DOC, "compile-cache": COMPILE_CACHE_DOC,
                "precision": PRECISION_DOC, "layout": LAYOUT_DOC}[name]
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=from_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if name == "process":
        parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE",
                            help="python -m phasescan's overrides, passed on as they are")
    elif name == "step":
        from phasescan.core.config import PRECISIONS
        parser.add_argument("--p", type=int, default=59)
        parser.add_argument("--d-model", type=int, default=128)
        parser.add_argument("--n-layers", type=int, default=1)
        parser.add_argument("--precision", choices=PRECISIONS, default="float32")
        parser.add_argument("--models", type=int, default=16, help="models in the vmapped scan")
        parser.add_argument("--steps", type=int, default=50, help="steps in the scans")
        parser.add_argument("--repeats", type=int, default=5)
    elif name == "batched-dot":
        parser.add_argument("--p", type=int, default=59)
        parser.add_argument("--d-model", type=int, default=128)
        parser.add_argument("--models", type=int, default=4)
    elif name == "segments":
        parser.add_argument("--repeats", type=int, default=3)
        parser.add_argument("--segments", default="0,500,100", help="steps per segment; 0 = all steps in one call")
        _overrides(parser, "phasescan config overrides (default: sweep=demo)")
    elif name == "logging":
        parser.add_argument("--time", action="store_true", help="also time the bucket without and with logging")
        _overrides(parser, "phasescan config overrides, e.g. sweep=demo train.log_every=100")
    elif name == "compile-cache":
        _overrides(parser, "python -m phasescan's overrides (default: sweep=demo train.steps=100 plot=false)")
    elif name == "precision":
        parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a finished sweep's folder")
    elif name == "layout":
        _overrides(parser, "phasescan config overrides (default: the tiny sweep above)")
    return parser


COMMANDS = {"process": process, "step": step, "batched-dot": batched_dot, "segments": segments,
            "logging": logging_cost, "compile-cache": compile_cache, "precision": precision,
            "layout": layout}


def usage() -> str:
    lines = __doc__.split("\n\n")[1]
    return f"usage: {PROG} SUB-COMMAND [ARGS]\n\n{lines}\n\n{PROG} SUB-COMMAND --help: its arguments\n"


def parse(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """(sub-command, its arguments); SystemExit on --help, no sub-command or an unknown one."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="", file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{PROG}: unknown sub-command {name!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        raise SystemExit(2)
    parser = parser_for(name)
    # process: everything after it is phasescan's; the others: flags and overrides in any order
    return name, parser.parse_args(rest) if name == "process" else parser.parse_intermixed_args(rest)


def main(argv=None):
    name, args = parse(list(sys.argv[1:] if argv is None else argv))
    if name == "layout" and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        # read when JAX starts (the sub-commands import it): two host devices for the 2-device row
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    return COMMANDS[name](args)


if __name__ == "__main__":
    out = main()
    if isinstance(out, int):  # process: the phasescan command's exit status
        sys.exit(out)
