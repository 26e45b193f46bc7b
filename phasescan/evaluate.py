"""`python -m phasescan.evaluate WEIGHTS.npz`: measure and label a model trained anywhere.

Prints ONE JSON object (grad_sym, dist_irr, circularity, acc, key_freqs, clock_fve, pizza_fve,
algorithm, ...). The weights use the interchange layout of docs/weights-format.md. If the file
holds `train_frac` and `data_seed` the model's own train/test split is rebuilt; otherwise
accuracy and loss are over all p^2 pairs and test_* are null (the label then uses `acc`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from . import data, grid, metrics, results, weights
from .chunk import memory_problem
from .config import compose
from .train import Spec, build_net


def json_value(v):
    """A table value as JSON: NaN and inf as null (JSON has no NaN), numpy scalars as Python."""
    if isinstance(v, list):
        return [json_value(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v.item() if isinstance(v, np.generic) else v


def evaluate_arrays(arrays: dict, overrides=()) -> dict:
    """Metrics and label of one model given as an interchange dict."""
    cfg = compose(*overrides)
    run = grid.base_fields(cfg) | weights.shape_fields(arrays)
    spec = Spec.from_run(run)
    opts = cfg["metrics"]
    dataset = data.Dataset(spec.p, spec.op, spec.input_format)
    has_split = "train_frac" in arrays and "data_seed" in arrays
    mask = (data.train_mask(jax.random.key(run["data_seed"]), dataset.n_pairs, run["train_frac"])
            if has_split else jnp.ones(dataset.n_pairs))
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, opts["grad_sym_triples"], opts["triples_seed"]))
    net = build_net(spec, dataset, jnp.float32(run["attn_rate"]))
    measured = jax.jit(lambda params: metrics.evaluate(net, params, dataset, mask, triples,
                                                        opts["key_freq_min_share"], opts["n_circles"]))
    values = {k: np.asarray(v)[None] for k, v in measured(weights.to_params(arrays)).items()}
    # The same columns and labels as a sweep's row (without a test set, the label judges
    # generalisation on all pairs: classify.classify)
    out = {name: json_value(column[0]) for name, column in
           results.metric_columns(values, cfg["classify"]).items()}
    out |= {"p": spec.p, "d_model": spec.d_model, "n_layers": spec.n_layers,
            "attn_rate": run["attn_rate"], "split": "own" if has_split else "all pairs"}
    return out


def check_overrides(overrides: list[str]) -> list[str]:
    """Problems of the measurement's overrides, found as a sweep's are (unknown keys, ranges)."""
    from .config import check_options
    from .overrides import unknown_names

    kept, problems = unknown_names(list(overrides))
    try:
        problems += check_options(compose(*kept))
    except Exception as error:  # Hydra's own errors (syntax, types): one line
        problems.append(f"{' '.join(kept)}: {str(error).splitlines()[0]}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a .npz file in the interchange layout")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for the measurement, e.g. metrics.grad_sym_triples=all")
    args = parser.parse_args(argv)
    problems = check_overrides(args.overrides)
    try:
        arrays = weights.load(args.weights)
    except weights.UnreadableWeights as error:
        problems.append(f"cannot read {error}")
        arrays = None
    if arrays is not None:
        problems += [f"{args.weights}: {problem}" for problem in weights.check(arrays)]
    if arrays is not None and not problems:
        memory = memory_problem(Spec.from_run(grid.base_fields(compose()) | weights.shape_fields(arrays)))
        problems += [memory] if memory else []
    if problems:
        print("phasescan.evaluate: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]),
              file=sys.stderr)
        return 2
    print(json.dumps(evaluate_arrays(arrays, args.overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
