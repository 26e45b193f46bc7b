"""Whole processes: phasescan's command against PyTorch's ways (the authors' eager way, a vmapped
ensemble), the same 16 models.

    python -m bench.cpu_vs_torch                 # 3 timed rounds after a warm-up round
    python -m bench.cpu_vs_torch --runs 5 --phasescan-override sweep.vmap_group=1
    python -m bench.cpu_vs_torch --cpu-tuned      # phasescan with CPU_TUNED_XLA_FLAGS (below)
    python -m bench.cpu_vs_torch --with-compile   # also the ensemble under torch.compile
    python -m bench.cpu_vs_torch --devices 2      # phasescan on 2 host devices (one per core)
    python -m bench.cpu_vs_torch --ways phasescan,torch-ensemble
    python -m bench.cpu_vs_torch torch [--p 23 --d-model 32 --steps 1000 --attn-rates 8 --seeds 2]
                                                 # the PyTorch side alone (one process), its rows
    python -m bench.cpu_vs_torch torch-ensemble [the same arguments] [--compile]
                                                 # the same models as one vmapped ensemble

The issue's CPU case: p = 23, d_model = 32, 1,000 full-batch steps, attention rate
linspace(0, 1, 8) x 2 seeds. Each side is a separate process, timed from its start to its exit
(interpreter start-up, imports, Hydra, JAX's backend, compilation, training, metrics and writing
the results included), the ways in turn within each round (A B C A B C ...) so a drift of the
machine's speed hits all of them:

  phasescan  python -m phasescan task.p=23 'sweep.axes.d_model=[32]'
             'sweep.axes.attn_rate=linspace(0,1,8)' sweep.seeds=2 train.steps=1000 plot=false
             out_dir=<fresh folder each run>  (the compile cache as configured: the warm-up run
             fills it, as any earlier run on the machine would; --cold-cache: a new empty one each run)
  torch      python -m bench.cpu_vs_torch torch --p 23 --d-model 32 --steps 1000 --attn-rates 8
             --seeds 2  (the model and its training: bench/torch_reference.py, one eager model
             after another, float64 loss, a test evaluation every step)
  torch-ensemble  python -m bench.cpu_vs_torch torch-ensemble ... (the same models, the same
             initial weights and splits, trained as one torch.func.vmap ensemble:
             bench/torch_ensemble.py); torch-ensemble-compiled: the same with --compile
             (torch.compile; its inductor cache in the system's temporary folder, filled by the
             warm-up round as phasescan's is; --cold-cache: a new empty one each run)

--ways chooses the ways (default phasescan,torch,torch-ensemble; --with-compile adds
torch-ensemble-compiled). Prints every run's wall and CPU seconds (this process's own accounting
of the finished child: os.wait4) and its seconds in process (what the process itself timed of
its training and final metrics: phasescan's manifest wall_s less its compile_s; the PyTorch ways'
per-model `seconds`, summed), then min / median / max of each way and of the ratio way / first
way (phasescan) taken round by round, the float32 matmul peak measured afterwards in this process
(bench.throughput.measure_peak; --no-peak skips it) and the fraction of it each way's training
reaches in process (the case's matmul FLOPs, bench.throughput.flops_per_step, the same count for
every way), all of it once more as one Markdown table (docs/benchmarks.md); and checks that they
computed comparable models: the final training losses' range and the classes per attention rate
(phasescan's table; the PyTorch models labelled by phasescan's rule without its circle steps).
Needs torch (`pip install -e ".[bench]"`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASE = {"p": 23, "d_model": 32, "steps": 1000, "attn_rates": 8, "seeds": 2}
# XLA:CPU (jax 0.10.2) runs elementwise and reduction fusions through YNNPACK by default; at small
# widths some of them are several times slower than XLA's own loop fusions (the softmax's backward
# over 2 keys x 4 heads: 1.0 ms of a 7.3 ms step at p = 23, d = 32). Keeping YNNPACK for the dots
# only trains 15-40% faster at d = 16-32 and the same at d = 64-128; it rounds differently (float32
# rounding, not the science: docs/benchmarks.md). An experimental XLA flag: a jaxlib without it
# refuses to start, so it is an opt-in setting, not phasescan's default.
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count="  # --devices: one device per core
CPU_TUNED_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def phasescan_command(out_dir: Path, overrides: list[str]) -> list[str]:
    c = CASE
    return [sys.executable, "-m", "phasescan", f"task.p={c['p']}", f"sweep.axes.d_model=[{c['d_model']}]",
            f"sweep.axes.attn_rate=linspace(0,1,{c['attn_rates']})", f"sweep.seeds={c['seeds']}",
            f"train.steps={c['steps']}", "plot=false", f"out_dir={out_dir}", *overrides]


# The PyTorch ways: way name -> (sub-command, its extra arguments).
TORCH_WAYS = {"torch": ("torch", []), "torch-ensemble": ("torch-ensemble", []),
              "torch-ensemble-compiled": ("torch-ensemble", ["--compile"])}
# phasescan's ways: way name -> its extra overrides (phasescan-direct: the direct forward, the
# authors' computation; phasescan itself runs its default, the factored forward)
PHASESCAN_WAYS = {"phasescan": [], "phasescan-direct": ["model.forward=direct"]}
WAYS = (*PHASESCAN_WAYS, *TORCH_WAYS)
DEFAULT_WAYS = ("phasescan", "torch", "torch-ensemble")


def torch_command(json_path: Path, extra: list[str], way: str = "torch") -> list[str]:
    c = CASE
    sub, flags = TORCH_WAYS[way]
    return [sys.executable, "-m", "bench.cpu_vs_torch", sub, "--p", str(c["p"]), "--d-model",
            str(c["d_model"]), "--steps", str(c["steps"]), "--attn-rates", str(c["attn_rates"]),
            "--seeds", str(c["seeds"]), "--quiet", "--json", str(json_path), *flags, *extra]


def timed(command: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run `command` to its end; wall seconds and the child's user + system CPU seconds."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    stderr_chunks = []
    # Reading stderr while it runs: a full pipe would stall the child.
    reader = threading.Thread(target=lambda: stderr_chunks.append(child.stderr.read()))
    reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{''.join(stderr_chunks)[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime}


def spread(values: list[float]) -> str:
    return f"{min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}"


def in_process_seconds(way: str, output: Path) -> float:
    """What the way's process timed of its own training and final metrics (compilation apart
    where it says so): phasescan's sweep time (manifest.json wall_s) less its compile_s, or the
    sum of the PyTorch rows' `seconds` (a compiled ensemble's compilation included)."""
    if way in PHASESCAN_WAYS:
        manifest = json.loads((output / "manifest.json").read_text())
        return manifest["wall_s"] - sum(manifest["compile_s"].values())
    return sum(row["seconds"] for row in json.loads(output.read_text()))


def case_flops(ps_dir: Path | None) -> float:
    """Matmul FLOPs of the case's training (bench.throughput.flops_per_step, every model and
    step), from phasescan's runs table when there is one (its models' actual sizes), else from
    CASE with the reference's one layer and 80/20 split."""
    from types import SimpleNamespace

    from bench.throughput import flops_per_step
    c = CASE
    if ps_dir is not None:
        import pandas as pd
        runs = pd.read_parquet(ps_dir / "runs.parquet")
        rows = runs[["p", "d_model", "n_layers", "train_frac", "batch_size", "steps"]].astype(object)
        rows = rows.where(rows.notna(), None).to_dict("records")  # batch_size: NA is full batch
        return float(sum(flops_per_step(SimpleNamespace(**row))["step"] * row["steps"] for row in rows))
    spec = SimpleNamespace(p=c["p"], d_model=c["d_model"], n_layers=1, train_frac=0.8, batch_size=None)
    return flops_per_step(spec)["step"] * c["steps"] * c["attn_rates"] * c["seeds"]


def markdown_table(ways: list[str], times: dict, ratios: dict, flops: float, peak: float | None) -> str:
    """The comparison as one Markdown table (min / median / max over the rounds)."""
    three = lambda v: f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}"
    first = ways[0]
    lines = [f"| way | whole process, wall s | CPU s (median) | wall, way / {first} | in process, s "
             f"| in process, way / {first} | GFLOP/s in process (median) | of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for way in ways:
        inside = [t["inside"] for t in times[way]]
        rate = flops / statistics.median(inside) / 1e9
        lines.append(f"| {way} | {three([t['wall'] for t in times[way]])} | "
                     f"{statistics.median([t['cpu'] for t in times[way]]):.2f} | "
                     f"{three(ratios[(way, 'wall')]) if way != first else ''} | {three(inside)} | "
                     f"{three(ratios[(way, 'inside')]) if way != first else ''} | {rate:.2f} | "
                     f"{f'{rate * 1e9 / peak:.1%}' if peak else 'not measured'} |")
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def compare_models(ps_dir: Path, torch_json: Path, name: str = "torch") -> None:
    """Final train losses and classes per attention rate, phasescan and one PyTorch way (`name`)."""
    import numpy as np
    import pandas as pd
    ps = pd.read_parquet(ps_dir / "runs.parquet")
    tr = pd.DataFrame(json.loads(torch_json.read_text()))
    width = max(10, len(name) + 1)
    print(f"\n{name}: final training loss (min / median / max):")
    for who, frame in (("phasescan", ps), (name, tr)):
        loss = frame["train_loss"].to_numpy()
        print(f"  {who:<{width}} {loss.min():.3g} / {np.median(loss):.3g} / {loss.max():.3g}")
    print("test accuracy (min / median):   "
          f"phasescan {ps['test_acc'].min():.3f} / {ps['test_acc'].median():.3f}   "
          f"{name} {tr['test_acc'].min():.3f} / {tr['test_acc'].median():.3f}")
    print(f"classes per attention rate (phasescan: its full rule; {name}: the rule without circle steps):")
    for rate in sorted(ps["attn_rate"].unique()):
        near = lambda f, rate=rate: f[np.isclose(f["attn_rate"], rate)]
        a, b = near(ps), near(tr)
        fmt = lambda f: ", ".join(f"{x} (gs {g:.2f} di {d:.2f})" for x, g, d in
                                  zip(f["algorithm"], f["grad_sym"], f["dist_irr"]))
        print(f"  {rate:5.3f}  {'phasescan:':<{width + 1}} {fmt(a)}\n         {name + ':':<{width + 1}} {fmt(b)}")


def compare_forwards(factored_dir: Path, direct_dir: Path) -> None:
    """The same models by the two forwards (model.forward): labels equal, metric differences."""
    import pandas as pd
    keys = ["attn_rate", "seed"]
    both = pd.read_parquet(factored_dir / "runs.parquet").merge(
        pd.read_parquet(direct_dir / "runs.parquet"), on=keys, suffixes=("", "_direct"))
    same = (both["algorithm"] == both["algorithm_direct"]).sum()
    print(f"\nphasescan-direct: labels equal to phasescan's (factored) for {same} of {len(both)} models; "
          + ", ".join(f"max |d {m}| {(both[m] - both[m + '_direct']).abs().max():.3g}"
                      for m in ("train_loss", "test_acc", "grad_sym", "dist_irr")))
    for row in both[both["algorithm"] != both["algorithm_direct"]].itertuples():
        print(f"  attn_rate {row.attn_rate:.3f} seed {row.seed}: {row.algorithm} (gs {row.grad_sym:.3f}) "
              f"against {row.algorithm_direct} (gs {row.grad_sym_direct:.3f})")


def torch_parser(ensemble: bool = False) -> argparse.ArgumentParser:
    """The torch sub-command's arguments; ensemble: torch-ensemble's (the same, and --compile)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu_vs_torch torch" + ("-ensemble" if ensemble else ""),
        description=("The same models as the torch sub-command, trained as ONE vmapped PyTorch "
                     "ensemble (torch.func: bench/torch_ensemble.py; the same initial weights and "
                     "splits), a row of final metrics each." if ensemble else
                     "The PyTorch authors' way alone, as one process: the models of attn_rate "
                     "linspace(0, 1, N) x seeds one after another (bench/torch_reference.py), a row "
                     "of final metrics each."))
    parser.add_argument("--p", type=int, default=CASE["p"])
    parser.add_argument("--d-model", type=int, default=CASE["d_model"])
    parser.add_argument("--steps", type=int, default=CASE["steps"])
    parser.add_argument("--attn-rates", type=int, default=CASE["attn_rates"], help="linspace(0, 1, N)")
    parser.add_argument("--seeds", type=int, default=CASE["seeds"])
    parser.add_argument("--eval-every", type=int, default=1, help="test evaluation every N steps (0: none)")
    parser.add_argument("--last-only", action="store_true",
                        help="last layer at the last position only (phasescan's FLOPs)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--save-weights", type=Path, default=None, help="write <DIR>/<i>.npz per model")
    parser.add_argument("--quiet", action="store_true")
    if ensemble:
        parser.add_argument("--compile", action="store_true",
                            help="torch.compile the vmapped loss (and its backward) and evaluation")
    return parser


def torch_main(argv=None, ensemble: bool = False) -> list[dict]:
    """The torch sub-command (ensemble: torch-ensemble): train and measure the PyTorch models,
    print and/or write their rows."""
    parser = torch_parser(ensemble)
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        parser.exit(2, f'{parser.prog}: needs torch: pip install -e ".[bench]"\n')
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    common = (args.p, args.d_model, args.steps, args.attn_rates, args.seeds, args.last_only,
              args.eval_every, args.device, args.save_weights)
    if ensemble:
        from bench import torch_ensemble
        rows = torch_ensemble.train_population(*common, compile=args.compile)
    else:
        from bench import torch_reference as ref
        rows = ref.train_population(*common)
    if not args.quiet:
        way = ("one vmapped ensemble" + (", torch.compile" if args.compile else "")) if ensemble \
            else "one eager model after another"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {way}: {len(rows)} models, "
              f"p={args.p} d_model={args.d_model} steps={args.steps}, "
              f"{time.perf_counter() - t0:.2f} s training and metrics")
        print(f"{'attn_rate':>9}{'seed':>5}{'train_loss':>12}{'test_acc':>9}{'grad_sym':>9}"
              f"{'dist_irr':>9}{'circ':>7}  algorithm (no circle steps)")
        for r in rows:
            print(f"{r['attn_rate']:>9.3f}{r['seed']:>5}{r['train_loss']:>12.3g}{r['test_acc']:>9.3f}"
                  f"{r['grad_sym']:>9.3f}{r['dist_irr']:>9.3f}{r['circularity']:>7.3f}  {r['algorithm']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_vs_torch",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="python -m bench.cpu_vs_torch torch --help (or torch-ensemble "
                                            "--help): one PyTorch side alone")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds, every way once each (after the warm-up rounds)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cold-cache", action="store_true",
                        help="phasescan (and torch-ensemble-compiled: TORCHINDUCTOR_CACHE_DIR) with a "
                             "new empty compile cache each run (compilation included)")
    parser.add_argument("--phasescan-override", action="append", default=[],
                        help="an extra phasescan override, e.g. sweep.vmap_group=1")
    parser.add_argument("--torch-arg", action="append", default=[],
                        help="an extra argument of the torch sub-command, e.g. --torch-arg=--threads=1")
    parser.add_argument("--cpu-tuned", action="store_true",
                        help=f"phasescan with XLA_FLAGS={CPU_TUNED_XLA_FLAGS} (added to any XLA_FLAGS set)")
    parser.add_argument("--devices", type=int, default=None,
                        help=f"phasescan on N host devices (XLA_FLAGS={HOST_DEVICES_FLAG}N, added to any set)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs here")
    parser.add_argument("--ways", type=ways_list, default=list(DEFAULT_WAYS),
                        help=f"comma-separated, in the order of each round (ratios against the "
                             f"first): of {', '.join(WAYS)} (default {','.join(DEFAULT_WAYS)})")
    parser.add_argument("--with-compile", action="store_true",
                        help="add torch-ensemble-compiled (torch-ensemble --compile) to the ways")
    parser.add_argument("--no-peak", action="store_true",
                        help="do not measure the float32 matmul peak afterwards (no fraction of peak)")
    return parser


def ways_list(text: str) -> list[str]:
    ways = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown or not ways or len(set(ways)) < len(ways):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct ways of {', '.join(WAYS)}")
    return ways


def main(argv=None):
    """The ways in turn (the comparison), or with the first argument `torch` / `torch-ensemble`
    one PyTorch side alone (torch_main)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["torch"], ["torch-ensemble"]):
        return torch_main(argv[1:], ensemble=argv[0] == "torch-ensemble")
    parser = compare_parser()
    args = parser.parse_args(argv)
    ways = list(args.ways)
    if args.with_compile and "torch-ensemble-compiled" not in ways:
        ways.append("torch-ensemble-compiled")

    root = Path(__file__).resolve().parents[1]
    work = args.keep or Path(tempfile.mkdtemp(prefix="cpu_vs_torch-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    if any(w in TORCH_WAYS for w in ways) and importlib.util.find_spec("torch") is None:
        parser.exit(2, 'bench.cpu_vs_torch: needs torch: pip install -e ".[bench]"\n')
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {os.cpu_count()} CPUs  load average {load_average()}")
    ps_env = dict(env)
    flags = [CPU_TUNED_XLA_FLAGS] if args.cpu_tuned else []
    flags += [f"{HOST_DEVICES_FLAG}{args.devices}"] if args.devices else []
    if flags:
        ps_env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), *flags]))

    def output(way: str, i: int) -> Path:  # the folder (phasescan) or rows (PyTorch) of run i
        return work / (f"{way}-{i}" if way in PHASESCAN_WAYS else f"{way}-{i}.json")

    def command(way: str, i: int) -> tuple[list[str], dict]:
        if way in PHASESCAN_WAYS:
            overrides = list(args.phasescan_override) + PHASESCAN_WAYS[way]
            if args.cold_cache:
                overrides.append(f"compile_cache={work / f'cache-{i}'}")
            return phasescan_command(output(way, i), overrides), ps_env
        way_env = env
        if args.cold_cache and way == "torch-ensemble-compiled":
            way_env = dict(env, TORCHINDUCTOR_CACHE_DIR=str(work / f"inductor-cache-{i}"))
        return torch_command(output(way, i), args.torch_arg, way), way_env

    for letter, way in zip("ABCDEFGH", ways):
        shown = (" ".join(phasescan_command(Path("<fresh>"), args.phasescan_override + PHASESCAN_WAYS[way]))
                 if way in PHASESCAN_WAYS else " ".join(torch_command(Path("<json>"), args.torch_arg, way)))
        tuned = f"XLA_FLAGS='{ps_env['XLA_FLAGS']}' " if way in PHASESCAN_WAYS and flags else ""
        print(f"{letter} {way}: {tuned}{shown}")
    times = {way: [] for way in ways}
    for i in range(args.warmup + args.runs):
        counted = i >= args.warmup
        parts = []
        for way in ways:
            cmd, way_env = command(way, i)
            t = timed(cmd, root, way_env)
            t["inside"] = in_process_seconds(way, output(way, i))
            if counted:
                times[way].append(t)
            parts.append(f"{way} {t['wall']:7.2f} s wall {t['cpu']:7.2f} s cpu {t['inside']:7.2f} s in process")
        print(f"{'run' if counted else 'warm-up'} {i}: " + "   ".join(parts) + f"   load {load_average()}",
              flush=True)
    first = ways[0]
    width = max(len(f"{way} / {first} (wall)") for way in ways) + 2
    print(f"\n{'':<{width}}{'min':>8} {'median':>8} {'max':>8}")
    kinds = ("wall", "cpu", "inside")  # inside: the seconds in process (in_process_seconds)
    for way in ways:
        for kind in kinds:
            print(f"{way + ' ' + kind + ' s':<{width}}{spread([t[kind] for t in times[way]])}")
    ratios = {}  # (way, kind) -> way / first, round by round
    for way in ways[1:]:
        for kind in kinds:
            ratios[(way, kind)] = [b[kind] / a[kind] for a, b in zip(times[first], times[way])]
            print(f"{way + ' / ' + first + ' (' + kind + ')':<{width}}{spread(ratios[(way, kind)])}")
    last = args.warmup + args.runs - 1
    flops = case_flops(output("phasescan", last) if "phasescan" in ways else None)
    peak = None
    if not args.no_peak:  # after the rounds, in this process: the machine's speed of the moment
        from bench.throughput import measure_peak
        peak = measure_peak("float32", 2048)["flops"]
        print(f"\npeak: {peak / 1e9:.1f} GFLOP/s (2048^3 float32 matmul, best of 5); "
              f"the case's training: {flops / 1e9:.1f} GFLOP (matmuls, bench.throughput.flops_per_step)")
    table = markdown_table(ways, times, ratios, flops, peak)
    print(f"\n{table}")
    if "phasescan" in ways:
        for way in ways:
            if way in TORCH_WAYS:
                compare_models(output("phasescan", last), output(way, last), way)
            elif way == "phasescan-direct":
                compare_forwards(output("phasescan", last), output(way, last))
    print(f"\noutputs in {work}")
    return {"ways": ways, "times": times, "ratios": ratios, "flops": flops, "peak": peak, "table": table}


if __name__ == "__main__":
    main()
