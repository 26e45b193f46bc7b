"""Model weights as `.npz` files in the interchange layout of docs/weights-format.md.

Row-vector convention (`x @ W`); per-layer arrays carry a leading layer axis L:
  embed (vocab, d), pos_embed (n_ctx, d), unembed (d, vocab),
  W_Q W_K W_V (L, n_heads, d, d_head), W_O (L, n_heads*d_head, d),
  W_in (L, d, d_mlp), b_in (L, d_mlp), W_out (L, d_mlp, d), b_out (L, d),
  scalars attn_rate (float), p (int), act (str); optional: run_id, seed, data_seed, train_frac
  (with the last two the evaluator rebuilds the model's train/test split).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import results

LAYER_KEYS = ("W_Q", "W_K", "W_V", "W_O", "W_in", "b_in", "W_out", "b_out")
LINEAR_KEYS = ("embed", "embed_b", "W1", "b1", "W2", "b2", "unembed")  # linear.py, as named there
ZOO_KEYS = ("kind", "op", "input_format")  # scalar str; absent = transformer, add, ab
WEIGHTS_DIR = "weights"


def to_arrays(params, run: dict) -> dict[str, np.ndarray]:
    """Flax transformer params of one model -> the interchange dict."""
    tree = params["params"]
    if run.get("kind", "transformer") != "transformer":
        arrays = {name: np.asarray(tree[name]) for name in LINEAR_KEYS if name in tree}
    else:
        layers = [tree[f"layer_{i}"] for i in range(run["n_layers"])]
        arrays = {name: np.asarray(tree[name]) for name in ("embed", "pos_embed", "unembed")}
        arrays |= {key: np.stack([np.asarray(layer[key]) for layer in layers]) for key in LAYER_KEYS}
    arrays |= {key: np.str_(run[key]) for key in ZOO_KEYS if key in run}
    arrays |= {"attn_rate": np.float32(run["attn_rate"]), "p": np.int64(run["p"]),
               "act": np.str_(run["act"])}
    for key in ("run_id", "seed", "data_seed", "train_frac"):
        if key in run:
            arrays[key] = np.asarray(run[key])
    return arrays


def to_params(arrays: dict) -> dict:
    """The interchange dict -> Flax params of the transformer (or of a linear model)."""
    if str(arrays.get("kind", "transformer")) != "transformer":
        return {"params": {k: np.asarray(arrays[k], np.float32) for k in LINEAR_KEYS if k in arrays}}
    tree = {name: np.asarray(arrays[name], np.float32) for name in ("embed", "pos_embed", "unembed")}
    for i in range(arrays["W_Q"].shape[0]):
        tree[f"layer_{i}"] = {key: np.asarray(arrays[key][i], np.float32) for key in LAYER_KEYS}
    return {"params": tree}


def shape_fields(arrays: dict) -> dict:
    """The model fields a weights file implies (the rest come from the default config)."""
    fields = {"p": int(arrays["p"]), "act": str(arrays["act"]),
              "attn_rate": float(arrays["attn_rate"])}
    fields |= {key: str(arrays[key]) for key in ZOO_KEYS if key in arrays}
    if fields.get("kind", "transformer") == "transformer":
        fields |= {"d_model": int(arrays["embed"].shape[1]), "n_layers": int(arrays["W_Q"].shape[0]),
                   "n_heads": int(arrays["W_Q"].shape[1])}
    else:  # the hidden width h
        fields["d_model"] = int(arrays["unembed"].shape[0])
    for key, cast in (("train_frac", float), ("data_seed", int), ("seed", int)):
        if key in arrays:
            fields[key] = cast(arrays[key])
    return fields


def save(path: Path, arrays: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write_atomic(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def path_of(out_dir: Path, run_id: str) -> Path:
    return Path(out_dir) / WEIGHTS_DIR / f"{run_id}.npz"


def should_save(run: dict, save_weights, seed_start: int) -> bool:
    """`save_weights`: none, all, or an integer k = the first k seeds of every grid cell."""
    if save_weights in (None, "none", 0):
        return False
    if save_weights == "all":
        return True
    return run["seed"] - seed_start < int(save_weights)


def model_at(tree, i: int):
    """Model i of a stacked parameter tree (nested dicts of arrays with a leading model axis)."""
    return {k: model_at(v, i) if isinstance(v, dict) else v[i] for k, v in tree.items()}
