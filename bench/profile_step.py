"""Where one training step spends its time (default: the paper's model, p 59, d 128, 1 layer).

    python -m bench.profile_step [--p 59 --d-model 128 --models 16 --steps 50]

Times, each a separately compiled program (best of --repeats calls, after a warm-up):
  forward          the loss over all p^2 pairs (one model)
  forward+backward value_and_grad of that loss
  adamw update     optax.adamw's update + apply_updates, given gradients
  step             forward+backward+update: the sequential way's jitted step (donated buffers)
  step + host sync the same, plus reading the loss back to the host every step (PyTorch .item())
  dispatch         an empty jitted call: the fixed cost the Python loop pays per step
  scan, 1 model    `steps` steps inside one lax.scan (no Python between steps)
  scan, vmapped    `models` models x `steps` steps: jit(vmap(scan)), the engine's shape
and the compiled step's HLO: fusions, dot (matmul) ops and the other kernels, with the share
of matmul FLOPs spent in the attention einsums at context 2.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import optax

from phasescan import grid, train
from phasescan.config import PRECISIONS, compose

from bench.throughput import flops_per_step, one_model, sequential_programs


def best_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def hlo_summary(compiled) -> dict:
    """Kernels of a compiled program: the ops of its entry computation (after fusion), and the
    dot (matmul) ops anywhere in the module, fused or not."""
    text = compiled.as_text()
    entry = text[text.index("ENTRY"):]
    entry = entry[: entry.index("\n}")]
    counts: dict[str, int] = {}
    for op in re.findall(r"= (?:\([^=]*?\)|\S+) ([a-z][\w-]*)\(", entry):
        counts[op] = counts.get(op, 0) + 1
    return {"entry_ops": counts, "fusions": counts.get("fusion", 0),
            "dots_in_module": len(re.findall(r" dot\(", text))}


def attention_flop_share(spec: train.Spec) -> float:
    """Share of a forward pass's matmul FLOPs in the scores / mixing einsums (context 2)."""
    d, n_ctx, L = spec.d_model, 2, spec.n_layers
    attn = sum(4 * (1 if i == L - 1 else n_ctx) * n_ctx * d for i in range(L))
    return attn / flops_per_step(spec)["forward_per_example"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=59)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--models", type=int, default=16, help="models in the vmapped scan")
    parser.add_argument("--steps", type=int, default=50, help="steps in the scans")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

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

    step = jax.jit(fns["step"], donate_argnums=(0, 1))
    step_compiled = step.lower(params, opt_state, hp, split).compile()

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
            p_, s_, = carry
            p_, s_, l_ = fns["step"](p_, s_, hp, split)
            return (p_, s_), l_
        return jax.lax.scan(body, (params, opt_state), None, length=args.steps)[1]

    hps = train.HParams.from_runs(runs)
    keys = jax.vmap(jax.random.key)(jnp.asarray([r["seed"] for r in runs], dtype=jnp.uint32))
    vparams, vopt, _ = jax.vmap(jax.jit(fns["init"]))(keys, hps)

    def vscan(vparams, vopt, hps):
        return jax.vmap(scan_steps)(vparams, vopt, hps)

    empty = jax.jit(lambda x: x + 1)
    x0 = jnp.zeros(())
    times = {
        "forward": best_time(jax.jit(fns["loss"]), params, hp, split, repeats=args.repeats),
        "forward+backward": best_time(jax.jit(jax.value_and_grad(fns["loss"])), params, hp, split,
                                      repeats=args.repeats),
        "adamw update": best_time(jax.jit(adam), grads, opt_state, params, repeats=args.repeats),
        "step (python loop)": min(step_loop(args.steps, False) for _ in range(2)),
        "step + host sync": min(step_loop(args.steps, True) for _ in range(2)),
        "dispatch (empty call)": best_time(empty, x0, repeats=50),
        "scan, 1 model": best_time(jax.jit(scan_steps), params, opt_state, hp, repeats=2) / args.steps,
        f"scan, vmapped x{args.models}": best_time(jax.jit(vscan), vparams, vopt, hps, repeats=2)
        / (args.steps * args.models),
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


if __name__ == "__main__":
    main()
