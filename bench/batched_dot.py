"""Does vmapping over models slow the matmuls down? The MLP's W_in matmuls of one step, as the
engine runs them (a batched dot over `models`) and as one model runs them (a plain dot).

    python -m bench.batched_dot [--p 59 --d-model 128 --models 4]

forward:         (N, d) @ (d, 4d)          N = p^2 pairs
weight gradient: (N, d)^T @ (N, 4d)        contracts over the pairs: the backward's other matmul
Both in float32 at precision HIGHEST; ms per model, best of 5.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp


def best_time(fn, *args, repeats: int = 5) -> float:
    fn(*args).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.batched_dot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=59)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--models", type=int, default=4)
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    main()
