"""The two forwards side by side (model.forward, phasescan/engine/model.py): per training step of
one model, XLA's FLOP count and the compiled step's memory, and the seconds of a vmapped chunk's
step in process, direct against factored.

    python -m bench.forwards                      # p 23 d 32 and p 59 d 128, 8 models
    python -m bench.forwards --case 59,128 --models 4 --repeats 5
    python -m bench.forwards --parts --case 59,128   # where the factored step's time goes

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


def parts(p: int, d: int, repeats: int) -> list[tuple[str, float, float]]:
    """(part, ms forward, ms forward + backward) of one model's factored grid forward and of its
    pieces on random tensors of the same shapes: the (p^2, 4d) @ (4d, vocab) output product, the
    weighted sums of table rows over 4 heads with the batch axis a (position 0) and b (position
    1), and position 1's as a loop of broadcast products instead of an einsum."""
    from phasescan.engine import data
    from phasescan.engine.train import build_net

    spec = Spec(p=p, train_frac=0.8, d_model=d, n_layers=1, n_heads=4, act="relu", steps=1,
                batch_size=None, forward="factored")
    dataset = data.Dataset(p, "add", "ab")
    net = build_net(spec, dataset, jnp.float32(0.5))
    params = net.init(jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 4)
    heads, width, vocab = 4, 4 * d, dataset.vocab
    pre, out = jax.random.normal(k[0], (p, p, width)), jax.random.normal(k[1], (width, vocab))
    pattern, table = jax.random.normal(k[2], (heads, p, p)), jax.random.normal(k[3], (heads, p, width))
    loop_b = lambda pat, tab: sum(pat[h][:, :, None] * tab[h][None] for h in range(heads))
    cases = [
        ("the factored grid forward (sum of logits)", lambda w: net.grid_logits(w).sum(), (params,)),
        ("ReLU(pre) @ (W_out W_U)", lambda x, w: (jax.nn.relu(x) @ w).sum(), (pre, out)),
        ("weighted rows, batch a: einsum hab,haf->abf", lambda a, t: (jnp.einsum("hab,haf->abf", a, t) ** 2).sum(),
         (pattern, table)),
        ("weighted rows, batch b: einsum hab,hbf->abf", lambda a, t: (jnp.einsum("hab,hbf->abf", a, t) ** 2).sum(),
         (pattern, table)),
        ("weighted rows, batch b: a loop of broadcast products", lambda a, t: (loop_b(a, t) ** 2).sum(),
         (pattern, table)),
    ]
    rows = []
    for name, fn, args in cases:
        grad = jax.grad(fn, argnums=tuple(range(len(args))))
        rows.append((name, 1e3 * best_time(jax.jit(fn), *args, repeats=repeats),
                     1e3 * best_time(jax.jit(grad), *args, repeats=repeats)))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forwards", description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=None, help="p,d (repeatable; default 23,32 and 59,128)")
    parser.add_argument("--models", type=int, default=8, help="models vmapped in the timed step")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, the fastest counts")
    parser.add_argument("--parts", action="store_true", help="where one factored model's step spends its time")
    args = parser.parse_args(argv)
    cases = [tuple(map(int, c.split(","))) for c in (args.case or ["23,32", "59,128"])]
    if args.parts:
        for p, d in cases:
            print(f"| p {p}, d {d}: one model, jit | ms forward | ms forward + backward |\n| --- | --- | --- |")
            for name, forward, both in parts(p, d, args.repeats):
                print(f"| {name} | {forward:.2f} | {both:.2f} |", flush=True)
        return
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
