"""Where a whole `python -m phasescan` process spends its time: a timeline of its phases.

    python -m bench.process_profile task.p=23 'sweep.axes.d_model=[32]' \
        'sweep.axes.attn_rate=linspace(0,1,8)' sweep.seeds=2 train.steps=1000 plot=false out_dir=/tmp/x

Runs phasescan's own command line in this process (the same overrides) with timers around its
phases, and prints, in seconds since the interpreter started:
  * imports (phasescan's command, Hydra), Hydra composing the config, the sweep modules' imports;
  * the plan (validation, grid, JAX's backend start-up: the first jax.devices());
  * per compiled program (init, advance, measure): tracing, lowering to StableHLO, and XLA's
    compilation or the persistent cache's load (JAX's own monitoring events say which);
  * per chunk: init, each advance segment and the measurement, each waited for
    (block_until_ready), then writing the chunk's rows, runs.parquet, the figures.
The waits make the device work visible per phase; they cost nothing measurable here (the host
waits for each result anyway). Only for profiling: the results are the command's own.
"""
from __future__ import annotations

import os
import sys
import time

T0 = time.perf_counter()
PROCESS_START = None
try:  # the process's start time (clock ticks since boot), to count the interpreter's own start-up
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    PROCESS_START = uptime - start_ticks / os.sysconf("SC_CLK_TCK")  # seconds ago
except (OSError, ValueError, IndexError):
    pass

EVENTS: list[tuple[float, str]] = []
DURATIONS: list[tuple[float, str, float]] = []


def mark(what: str) -> None:
    EVENTS.append((time.perf_counter() - T0, what))


def timed(what: str, fn, block: bool = False):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        if block:
            import jax
            out = jax.block_until_ready(out)
        DURATIONS.append((t - T0, what, time.perf_counter() - t))
        return out
    return wrapper


def install() -> None:
    import jax
    import jax.monitoring

    from phasescan import chunk, results, sweep

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

    compile_chunk = chunk.compile_chunk
    sweep.compile_chunk = timed("compile_chunk (3 programs)", compile_chunk)
    run_chunk = chunk.run_chunk

    def run_chunk_timed(program, *args, **kwargs):
        import dataclasses
        program = dataclasses.replace(program, init=timed("init", program.init, True),
                                      advance=timed("advance (segment)", program.advance, True),
                                      measure=timed("measure (metrics)", program.measure, True))
        return timed("run_chunk", run_chunk)(program, *args, **kwargs)
    sweep.run_chunk = run_chunk_timed
    for module, name, what in [(sweep, "make_plan", "make_plan (validation, JAX backend start)"),
                               (sweep, "record", "write the chunk's rows (parquet)"),
                               (results, "assemble", "assemble runs.parquet")]:
        if hasattr(module, name):  # the modules change; time what is there
            setattr(module, name, timed(what, getattr(module, name)))


def main() -> None:
    argv = sys.argv[1:]
    mark("interpreter up, profile module imported")
    from phasescan import __main__ as cli_module
    mark("import phasescan.__main__ (Hydra, phasescan.config)")
    from phasescan import sweep  # noqa: F401  (what main() imports after Hydra's parsing)
    mark("import phasescan.sweep (JAX, flax, optax, pandas)")
    install()
    sys.argv = ["python -m phasescan", *argv]
    code = 0
    try:
        cli_module.cli()
    except SystemExit as stop:
        code = stop.code or 0
    mark("command returned")
    print_timeline()
    sys.exit(code)


def print_timeline() -> None:
    rows = [(t, what, None) for t, what in EVENTS] + DURATIONS
    rows.sort(key=lambda r: r[0])
    before = f"{PROCESS_START:.2f} s before 0" if PROCESS_START is not None else "unknown"
    print(f"\nprocess start: {before} (the interpreter's own start-up)", file=sys.stderr)
    print(f"{'at s':>8}  {'took s':>7}  phase", file=sys.stderr)
    for t, what, seconds in rows:
        took = f"{seconds:7.3f}" if seconds is not None else " " * 7
        print(f"{t:8.3f}  {took}  {what}", file=sys.stderr)


if __name__ == "__main__":
    main()
