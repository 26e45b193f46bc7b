"""Throughput of phasescan's vmapped engine against the one-model-at-a-time way, same models.

    python -m bench.throughput                       # 16 small models (p 23, d 64, 500 steps)
    python bench/throughput.py --p 59 --d-model 128 --steps 20000 --models 1000 --seq-models 2

(a) engine:     chunk.compile_chunk / chunk.run_chunk: one jit(vmap(...)) program per step kind trains and
                measures every model, the steps one lax.scan on the device.
(b) sequential: the paper's way. One jitted model at a time, a Python loop over the steps, a
                test-set evaluation after every step read back to the host (PyTorch's .item()),
                then the same final metrics. Built from the engine's own pieces
                (train.build_net, train.mean_loss, train.warmup_schedule,
                data.Dataset / data.split, precision), so it is the same computation: the
                tool checks that both ways end with the same train loss and grad_sym.
(c) torch:      the authors' way itself, in PyTorch (bench/torch_reference.py): one eager model
                after another, the loss in float64, AdamW, a test evaluation every step, then
                its own metrics. Same hyperparameters, not the same weights (its own random
                streams), so the tool compares the populations (losses, grad_sym, dist_irr).
                Skipped when torch is not installed (pip install -e ".[bench]") or the models are
                not the reference transformer it implements.

Printed per way: models/s, model-steps/s, compile time, training FLOP/s and its fraction of a
peak measured in the same process (a large matmul in the same precision on the same device).
FLOPs are counted from the shapes (flops_per_step); only matmuls are counted, and the per-step
test evaluation and final metrics are not counted, so FLOP/s is a lower bound for both ways.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hydra.errors import HydraException

from phasescan.engine import chunk, data, metrics, precision, train
from phasescan.engine.loss import accurate_cross_entropy
from phasescan.core import grid
from phasescan.core.config import PRECISIONS, ConfigError, compose


def flops_per_step(spec: train.Spec) -> dict[str, float]:
    """Matmul FLOPs of one model's training step (forward + backward), from the shapes, of the
    direct forward: the work of the authors' computation, the same count for every way timed
    (model.forward=factored spends fewer: `python -m bench.forwards` gives XLA's count of both).

    What the model actually computes: the full batch is the forward pass over the
    floor(train_frac p^2) train pairs, context 2, and the last layer computes only the last
    position's query, attention output, W_O and MLP (the only position read). Per example
    and layer with q query rows (2, or 1 in the last layer), d = d_model (heads add up to d):
      Q: 2 q d^2   K, V: 2 * 2 n_ctx d^2   scores, mixing: 2 * 2 q n_ctx d   W_O: 2 q d^2
      MLP d -> 4d -> d: 16 q d^2;   unembedding: 2 d p.
    Backward = 2 x forward (gradients w.r.t. both operands of every matmul: the embeddings are
    parameters too), so a step is 3 x forward. Softmax, activations, the loss and AdamW are
    elementwise and not counted.
    """
    d, p, n_ctx = spec.d_model, spec.p, 2
    forward = 2 * d * p  # unembedding
    for layer in range(spec.n_layers):
        q = 1 if layer == spec.n_layers - 1 else n_ctx
        forward += 2 * q * d * d + 4 * n_ctx * d * d + 4 * q * n_ctx * d + 2 * q * d * d + 16 * q * d * d
    examples = data.n_train(p * p, spec.train_frac) if spec.batch_size is None else spec.batch_size
    return {"forward_per_example": forward, "examples": examples, "step": 3 * forward * examples}


def best_time(fn, *args, repeats: int = 5) -> float:
    """Seconds of the fastest of `repeats` calls of fn(*args), each waited for, after a warm-up
    call (which compiles). The one timer of bench/ for a jitted call (bench.profile uses it too)."""
    jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peak(precision_name: str, n: int, repeats: int = 5) -> dict:
    """FLOP/s of an n x n @ n x n matmul in the precision's compute dtype and matmul setting."""
    dtype = precision.compute_dtype(precision_name)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    matmul = jax.jit(precision.traced_under(precision_name, lambda x, y: x @ y))
    best = best_time(matmul, a, b, repeats=repeats)
    return {"n": n, "dtype": jnp.dtype(dtype).name, "seconds": best, "flops": 2 * n ** 3 / best}


def run_engine(runs: list[dict], metric_opts: dict, chunk_size: int, vmap_group: int | None = None) -> dict:
    spec = train.Spec.from_run(runs[0])
    t0 = time.perf_counter()
    compiled = chunk.compile_chunk(spec, chunk_size, metric_opts, vmap_group=vmap_group)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = {k: [] for k in ("train_loss", "grad_sym", "dist_irr")}
    for i in range(0, len(runs), chunk_size):
        chunk_metrics = chunk.run_chunk(compiled, runs[i: i + chunk_size], chunk_size)
        for k in out:
            out[k].append(chunk_metrics[k])
    run_s = time.perf_counter() - t0  # run_chunk returns host arrays: the work is finished
    return {"compile_s": compile_s, "run_s": run_s, **{k: np.concatenate(v) for k, v in out.items()}}


def sequential_programs(spec: train.Spec, metric_opts: dict) -> dict:
    """One model's functions, the paper's way: init, one training step on the train pairs, an
    evaluation on the test pairs, the final metrics (not yet jitted). Same pieces and order of
    operations as train.make_train (full batch), under the same precision policy."""
    if spec.batch_size is not None:
        raise ConfigError("the sequential baseline trains full batch (train.batch_size=null)")
    dataset = data.Dataset(spec.p, spec.op, spec.input_format)
    net_of = lambda attn_rate: train.build_net(spec, dataset, attn_rate)
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, metric_opts["grad_sym_triples"],
                                                   metric_opts["triples_seed"]))

    def optimizer(hp):
        return optax.adamw(train.warmup_schedule(hp), b1=hp.beta1, b2=hp.beta2,
                           eps=train.ADAM_EPS, weight_decay=hp.weight_decay)

    def init(key, hp):
        params = net_of(hp.attn_rate).init(key)
        split = data.split(jax.random.key(hp.data_seed), dataset.n_pairs, spec.train_frac)
        return params, optimizer(hp).init(params), split

    def loss(params, hp, split):  # the train pairs only, as PyTorch's full batch
        train_idx = split[0]
        return train.mean_loss(spec, dataset, hp.attn_rate, params, dataset.tokens[train_idx],
                               dataset.labels[train_idx])

    def step(params, opt_state, hp, split):
        loss_value, grads = jax.value_and_grad(loss)(params, hp, split)
        updates, opt_state = optimizer(hp).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss_value

    def test_eval(params, hp, split):  # the test pairs only
        test_idx = split[1]
        logits = net_of(hp.attn_rate).logits(params, dataset.tokens[test_idx])
        labels = dataset.labels[test_idx]
        correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
        return jnp.mean(accurate_cross_entropy(logits, labels)), jnp.mean(correct)

    def final(params, hp, split):
        return metrics.evaluate(net_of(hp.attn_rate), params, dataset,
                                data.indicator(split[0], dataset.n_pairs),
                                triples, metric_opts["key_freq_min_share"], metric_opts["n_circles"])

    return {name: precision.traced_under(spec.precision, fn) for name, fn in
            {"init": init, "loss": loss, "step": step, "test_eval": test_eval,
             "final": final}.items()}


def one_model(run: dict):
    hp = jax.tree_util.tree_map(lambda x: x[0], train.HParams.from_runs([run]))
    return jax.random.key(run["seed"]), hp


def run_sequential(runs: list[dict], metric_opts: dict, eval_every: int) -> dict:
    spec = train.Spec.from_run(runs[0])
    fns = sequential_programs(spec, metric_opts)
    key, hp = one_model(runs[0])
    t0 = time.perf_counter()  # compile each program once, ahead of time, like the engine
    init = jax.jit(fns["init"]).lower(key, hp).compile()
    params, opt_state, split = init(key, hp)
    # Donate the parameters and optimizer state: each step updates them in place.
    step = jax.jit(fns["step"], donate_argnums=(0, 1)).lower(params, opt_state, hp, split).compile()
    test_eval = jax.jit(fns["test_eval"]).lower(params, hp, split).compile()
    final = jax.jit(fns["final"]).lower(params, hp, split).compile()
    compile_s = time.perf_counter() - t0
    analysis = step.cost_analysis()  # XLA's own count (matmuls + elementwise), a cross-check
    xla_flops = (analysis[0] if isinstance(analysis, list) else analysis or {}).get("flops")

    out = {k: [] for k in ("train_loss", "grad_sym", "dist_irr")}
    t0 = time.perf_counter()
    for run in runs:
        key, hp = one_model(run)
        params, opt_state, split = init(key, hp)
        log = []
        for s in range(spec.steps):
            params, opt_state, loss = step(params, opt_state, hp, split)
            if eval_every and (s + 1) % eval_every == 0:
                test_loss, test_acc = test_eval(params, hp, split)
                log.append((float(loss), float(test_loss), float(test_acc)))  # host sync
        result = jax.device_get(final(params, hp, split))
        for k in out:
            out[k].append(float(result[k]))
    run_s = time.perf_counter() - t0
    return {"compile_s": compile_s, "run_s": run_s, "xla_step_flops": xla_flops,
            **{k: np.asarray(v) for k, v in out.items()}}


def torch_unsupported(spec: train.Spec) -> str | None:
    """Why bench/torch_reference.py cannot train this bucket (None: it can)."""
    wanted = {"kind": "transformer", "n_layers": 1, "n_heads": 4, "act": "relu", "op": "add",
              "input_format": "ab", "batch_size": None, "precision": "float32",
              "cross_entropy": "accurate"}
    differ = [f"{k}={getattr(spec, k)!r}" for k, v in wanted.items() if getattr(spec, k) != v]
    return f"the PyTorch reference is the paper's model only ({', '.join(differ)})" if differ else None


def run_torch(runs: list[dict], eval_every: int, last_only: bool = False, device: str = "cpu") -> dict:
    """The authors' way in PyTorch (bench/torch_reference.py), one model after another."""
    from bench import torch_reference as ref
    spec = train.Spec.from_run(runs[0])
    triples = ref.grad_sym_triples(spec.p, 300)
    out = {k: [] for k in ("train_loss", "grad_sym", "dist_irr")}
    t0 = time.perf_counter()
    for run in runs:
        model, split, _ = ref.train_model(
            spec.p, spec.d_model, run["attn_rate"], run["seed"], spec.steps, last_only, eval_every,
            lr=run["lr"], weight_decay=run["weight_decay"], betas=(run["beta1"], run["beta2"]),
            warmup_steps=run["warmup_steps"], train_frac=spec.train_frac, device=device)
        result = ref.final_metrics(model, split, triples)
        for k in out:
            out[k].append(result[k])
    run_s = time.perf_counter() - t0
    return {"compile_s": 0.0, "run_s": run_s, **{k: np.asarray(v) for k, v in out.items()}}


def make_runs(args) -> tuple[list[dict], dict]:
    """`models` runs: attention rate linspace(0, 1, ceil(models / seeds)) x seeds, in grid order."""
    n_rates = math.ceil(args.models / args.seeds)
    cfg = compose(f"task.p={args.p}", f"model.d_model={args.d_model}",
                  f"model.n_layers={args.n_layers}", f"train.steps={args.steps}",
                  f"train.precision={args.precision}", f"sweep.seeds={args.seeds}",
                  f"sweep.axes.attn_rate='linspace(0,1,{n_rates})'",
                  f"metrics.grad_sym_triples={args.grad_sym_triples}", *args.override)
    return grid.expand(cfg)[: args.models], cfg["metrics"]


def describe_device() -> str:
    device = jax.devices()[0]
    return f"{device.platform} {device.device_kind} x{jax.device_count()}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=23)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--models", type=int, default=16, help="models trained by each way")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per attention rate")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--chunk-size", type=int, default=None, help="engine models per program (default: all)")
    parser.add_argument("--seq-models", type=int, default=None,
                        help="train only the first N models sequentially and extrapolate its rate "
                             "(default: all of them; for GPU-sized runs)")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="sequential: test evaluation every N steps (0: none)")
    parser.add_argument("--peak-n", type=int, default=None,
                        help="matmul size for the peak (default 2048 on CPU, 8192 on an accelerator)")
    parser.add_argument("--grad-sym-triples", type=int, default=300)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch way")
    parser.add_argument("--torch-last-only", action="store_true",
                        help="PyTorch: the last layer at the last position only (phasescan's FLOPs; "
                             "default: both positions, as an ordinary PyTorch transformer)")
    parser.add_argument("--torch-device", default="cpu", help="the PyTorch way's device, e.g. cuda")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the PyTorch way (default: torch's own)")
    parser.add_argument("--vmap-group", type=int, default=None,
                        help="the engine's sweep.vmap_group: N models side by side, the groups in a "
                             "lax.map loop (default: all models side by side)")
    parser.add_argument("--compile-cache", default=None,
                        help="persistent compilation cache folder (default: off, so compile times are cold)")
    parser.add_argument("--nondeterministic", action="store_true",
                        help="GPU: leave XLA's atomic additions on (phasescan's deterministic=false); "
                             "the GPU figures of 2026-11-22 in docs/benchmarks.md were taken this way")
    parser.add_argument("--override", action="append", default=[],
                        help="extra phasescan config override, e.g. --override model.act=gelu")
    args = parser.parse_args(argv)

    from phasescan.engine import determinism
    from phasescan.engine.compile_cache import enable
    determinism.enable(not args.nondeterministic)  # as phasescan's default deterministic=true
    enable(args.compile_cache)
    try:
        runs, metric_opts = make_runs(args)
    except ConfigError as error:
        parser.exit(2, "bench.throughput: " + "\n  ".join(error.problems) + "\n")
    except HydraException as error:  # a malformed --override
        parser.exit(2, f"bench.throughput: {str(error).splitlines()[0]}\n")
    spec = train.Spec.from_run(runs[0])
    flops = flops_per_step(spec)
    on_cpu = jax.devices()[0].platform == "cpu"
    peak = measure_peak(args.precision, args.peak_n or (2048 if on_cpu else 8192))

    print(f"device: {describe_device()}   jax {jax.__version__}   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"models: {len(runs)}   p={spec.p} d_model={spec.d_model} n_layers={spec.n_layers} "
          f"steps={spec.steps} precision={spec.precision} full batch ({flops['examples']} pairs)")
    print(f"FLOPs per model-step (matmuls, forward+backward, last position only): {flops['step']:.4g}")
    print(f"peak: {peak['flops'] / 1e9:.1f} GFLOP/s ({peak['n']}^3 {peak['dtype']} matmul, best of 5)")

    engine_name = f"engine/vmap{args.vmap_group}" if args.vmap_group else "engine"
    results = {engine_name: run_engine(runs, metric_opts, args.chunk_size or len(runs), args.vmap_group)}
    if not args.skip_sequential:
        seq_runs = runs[: args.seq_models] if args.seq_models else runs
        results["sequential"] = run_sequential(seq_runs, metric_opts, args.eval_every)
    torch_note = None
    if not args.skip_torch:
        import importlib.util
        torch_note = torch_unsupported(spec) or (
            None if importlib.util.find_spec("torch") else 'torch is not installed (pip install -e ".[bench]")')
        if torch_note is None:
            import torch
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
            seq_runs = runs[: args.seq_models] if args.seq_models else runs
            results["torch"] = run_torch(seq_runs, args.eval_every, args.torch_last_only, args.torch_device)

    print(f"\n{'way':<13}{'models':>7}{'compile s':>11}{'run s':>9}{'models/s':>10}"
          f"{'model-steps/s':>15}{'GFLOP/s':>9}{'of peak':>9}")
    for way, r in results.items():
        n = len(r["train_loss"])
        r["models_per_s"] = n / r["run_s"]
        r["model_steps_per_s"] = n * spec.steps / r["run_s"]
        r["flops_per_s"] = r["model_steps_per_s"] * flops["step"]
        print(f"{way:<13}{n:>7}{r['compile_s']:>11.2f}{r['run_s']:>9.2f}{r['models_per_s']:>10.3f}"
              f"{r['model_steps_per_s']:>15.1f}{r['flops_per_s'] / 1e9:>9.3f}"
              f"{r['flops_per_s'] / peak['flops']:>9.1%}")
    if "sequential" in results:
        seq = results["sequential"]
        n = len(seq["train_loss"])
        ratio = results[engine_name]["models_per_s"] / seq["models_per_s"]
        note = "" if n == len(runs) else f" (sequential rate from {n} of {len(runs)} models)"
        print(f"\nengine / sequential models per second: {ratio:.2f}x{note}")
        eng = results[engine_name]
        for k in ("train_loss", "grad_sym", "dist_irr"):
            print(f"same models, max |engine - sequential| {k}: "
                  f"{np.max(np.abs(eng[k][:n] - seq[k])):.2e}")
        results["ratio"] = ratio
        if seq["xla_step_flops"]:
            print(f"XLA cost analysis of the sequential step: {seq['xla_step_flops']:.4g} FLOPs "
                  f"(matmuls + elementwise; the shape count above: {flops['step']:.4g})")
    if "torch" in results:
        tr, eng = results["torch"], results[engine_name]
        n = len(tr["train_loss"])
        note = "" if n == len(runs) else f" (PyTorch rate from {n} of {len(runs)} models)"
        results["ratio_torch"] = eng["models_per_s"] / tr["models_per_s"]
        import torch
        if not args.torch_last_only:
            print("(the torch row's FLOP/s counts the engine's FLOPs; it computed both positions' "
                  "queries and MLP in the last layer, more than counted)")
        print(f"\nengine / torch models per second: {results['ratio_torch']:.2f}x{note}   "
              f"(torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{'last position only' if args.torch_last_only else 'both positions'} in the last layer)")
        print("same hyperparameters, own initialisation (min / median / max):")
        for k in ("train_loss", "grad_sym", "dist_irr"):
            row = lambda x: f"{np.min(x):.3g} / {np.median(x):.3g} / {np.max(x):.3g}"
            print(f"  {k:<11} engine {row(eng[k][:n])}   torch {row(tr[k])}")
    elif torch_note:
        print(f"\ntorch way skipped: {torch_note}")
    results.update(flops=flops, peak=peak, device=describe_device(), n_models=len(runs))
    return results


if __name__ == "__main__":
    main()
