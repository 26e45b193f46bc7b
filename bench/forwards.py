"""The two forwards side by side (model.forward, phasescan/engine/model.py): per training step of
one model, XLA's FLOP count and the compiled step's memory, and the seconds of a vmapped chunk's
step in process, direct against factored.

    python -m bench.forwards                      # p 23 d 32 and p 59 d 128, 8 models
    python -m bench.forwards --case 59,128 --models 4 --repeats 5

The step is what training runs: the bucket's Program (engine/train.make_program: the loss and
its gradient, the AdamW update, the test accuracy of the dynamics), vmapped over --models models.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from bench.throughput import best_time
from phasescan.engine.train import HParams, Spec, make_program

FORWARDS = ("direct", "factored")
HP = dict(data_seed=0, attn_rate=0.5, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98,
          warmup_steps=10, init_scale=1.0)


def measure(p: int, d: int, forward: str, models: int, steps: int, repeats: int) -> dict:
    """XLA's FLOPs and temp memory of one model's one-step Program, and the seconds of `steps`
    steps of `models` vmapped models (the fastest of `repeats`), per model-step."""
    spec = lambda n: Spec(p=p, train_frac=0.8, d_model=d, n_layers=1, n_heads=4, act="relu",
                          steps=n, batch_size=None, forward=forward)
    hp = HParams.from_runs([HP] * models)
    one_hp = jax.tree.map(lambda x: x[0], hp)
    one = make_program(spec(1))
    state = one.init(jax.random.key(0), one_hp)
    compiled = jax.jit(one.advance).lower(state, jax.random.key(0), one_hp, jnp.int32(0)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    program = make_program(spec(steps))
    keys = jax.random.split(jax.random.key(0), models)
    states = jax.vmap(program.init)(keys, hp)
    advance = jax.jit(jax.vmap(program.advance, in_axes=(0, 0, 0, None)))
    seconds = best_time(advance, states, keys, hp, jnp.int32(0), repeats=repeats)
    return {"flops": cost["flops"], "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
            "model_step_s": seconds / models / steps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forwards", description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=None, help="p,d (repeatable; default 23,32 and 59,128)")
    parser.add_argument("--models", type=int, default=8, help="models vmapped in the timed step")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, the fastest counts")
    args = parser.parse_args(argv)
    cases = [tuple(map(int, c.split(","))) for c in (args.case or ["23,32", "59,128"])]
    print(f"| p | d | forward | XLA FLOP / step | direct / this | step memory (temp) | "
          f"ms / model-step ({args.models} vmapped, {args.steps} steps, best of {args.repeats}) | direct / this |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p, d in cases:
        rows = {f: measure(p, d, f, args.models, args.steps, args.repeats) for f in FORWARDS}
        for f, row in rows.items():
            print(f"| {p} | {d} | {f} | {row['flops']:.3g} | {rows['direct']['flops'] / row['flops']:.2f} | "
                  f"{row['temp_bytes'] / 2**20:.1f} MiB | {1e3 * row['model_step_s']:.2f} | "
                  f"{rows['direct']['model_step_s'] / row['model_step_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
