"""A saved model measured and labelled (`python -m phasescan.evaluate WEIGHTS.npz`).

Prints ONE JSON object (grad_sym, dist_irr, circularity, acc, key_freqs, clock_fve, pizza_fve,
algorithm, ...). The weights use the interchange layout of docs/weights-format.md. If the file
holds `train_frac` and `data_seed` the model's own train/test split is rebuilt; otherwise
accuracy and loss are over all p^2 pairs and test_* are null (the label then uses `acc`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..engine import data, metrics
from ..engine.train import Spec, build_net
from ..core import grid
from ..core.config import compose
from ..store import results, weights


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
    run = grid.with_forward(grid.base_fields(cfg) | weights.shape_fields(arrays))
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
