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


# Scalars a file may hold, checked like the config field of the same meaning (config.FIELDS).
SCALAR_FIELDS = {"p": "p", "act": "act", "attn_rate": "attn_rate", "kind": "kind", "op": "op",
                 "input_format": "input_format", "train_frac": "train_frac",
                 "data_seed": "split_seed", "seed": "split_seed"}
REQUIRED_SCALARS = ("p", "act", "attn_rate")


def check(arrays: dict) -> list[str]:
    """Every problem of an interchange dict, one line each, before anything is allocated from
    it: unknown or missing keys, scalars checked as their config fields, each array's dtype and
    its shape against the others (docs/weights-format.md)."""
    from ..core.config import ConfigError, coerce, split_problems
    from ..core.tasks import INPUT_FORMATS

    problems, scalars = [], {}
    known = {"embed", "pos_embed", "unembed", "run_id", *LAYER_KEYS, *LINEAR_KEYS, *SCALAR_FIELDS}
    problems += [f"{key}: unknown array (layout: docs/weights-format.md)" for key in arrays
                 if key not in known]
    for key, field in SCALAR_FIELDS.items():
        if key not in arrays:
            if key in REQUIRED_SCALARS:
                problems.append(f"{key}: missing (layout: docs/weights-format.md)")
            continue
        value = arrays[key]
        if value.ndim != 0 or value.dtype.kind not in "iufU":
            problems.append(f"{key}: must be a scalar (got shape {value.shape}, dtype {value.dtype})")
            continue
        try:
            scalars[key] = coerce(field, value.item(), key)
        except ConfigError as error:
            problems += error.problems
    if problems or "p" not in scalars:
        return problems
    p, kind = scalars["p"], scalars.get("kind", "transformer")
    if "train_frac" in scalars:  # the model's own split, refused where a sweep's would be
        problems += split_problems(p, scalars["train_frac"], where="")
    fmt = INPUT_FORMATS[scalars.get("input_format", "ab")]
    vocab, n_ctx = fmt.vocab(p), fmt.n_ctx
    if kind == "transformer":
        expected = {"embed": ("vocab", "d"), "pos_embed": ("n_ctx", "d"), "unembed": ("d", "vocab"),
                    "W_Q": ("L", "H", "d", "e"), "W_K": ("L", "H", "d", "e"), "W_V": ("L", "H", "d", "e"),
                    "W_O": ("L", "He", "d"), "W_in": ("L", "d", "m"), "b_in": ("L", "m"),
                    "W_out": ("L", "m", "d"), "b_out": ("L", "d")}
    else:
        wide = "w" if kind == "linear_d" else "h"
        expected = {"embed": ("p", wide), "W1": ("h", "h"), "b1": ("h",), "unembed": ("h", "p")}
        if kind == "linear_x":
            expected["embed_b"] = ("p", wide)
        if kind in ("linear_b", "linear_c"):
            expected |= {"W2": ("h", "h"), "b2": ("h",)}
    sizes = {"vocab": vocab, "n_ctx": n_ctx, "p": p}
    for key, dims in expected.items():
        if key not in arrays:
            problems.append(f"{key}: missing for kind {kind} (layout: docs/weights-format.md)")
            continue
        array = arrays[key]
        if array.dtype.kind != "f" or array.ndim != len(dims):
            problems.append(f"{key}: must be a float array of {len(dims)} axes {dims} "
                            f"(got shape {array.shape}, dtype {array.dtype})")
            continue
        for axis, (name, size) in enumerate(zip(dims, array.shape)):
            if sizes.setdefault(name, size) != size:
                problems.append(f"{key}: axis {axis} ({name}) is {size}, expected {sizes[name]} "
                                f"(p={p}, kind {kind}, input_format {scalars.get('input_format', 'ab')})")
                break
    if not problems and kind == "transformer":
        d, heads, e = sizes["d"], sizes["H"], sizes["e"]
        if heads * e != d or sizes["He"] != d or sizes["m"] != 4 * d or not 1 <= sizes["L"] <= 4:
            problems.append(f"W_Q/W_O/W_in: heads x d_head must equal d ({heads} x {e} vs {d}), "
                            f"d_mlp = 4d ({sizes['m']} vs {4 * d}), 1..4 layers ({sizes['L']})")
    if not problems and kind == "linear_d" and 2 * sizes["w"] != sizes["h"]:
        problems.append(f"embed: width must be h / 2 = {sizes['h'] // 2} for kind linear_d")
    return problems


def save(path: Path, arrays: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write_atomic(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))


class UnreadableWeights(ValueError):
    """A file that is not an interchange .npz (its message is one line, safe to show)."""


def load(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz weights file; a file that is not one raises UnreadableWeights
    (never a suggestion to load pickles: object arrays are refused)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a .npy file: one array, not a named layout
            raise UnreadableWeights(f"{path}: a single array (.npy), not a .npz of named arrays")
        with loaded as f:
            return {key: f[key] for key in f.files}
    except UnreadableWeights:
        raise
    except FileNotFoundError:
        raise UnreadableWeights(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnreadableWeights(f"{path}: a folder, not a .npz file") from None
    except Exception as error:  # numpy/zipfile raise many types; their messages may advise pickles
        kind = "holds object arrays (refused)" if "Object arrays" in str(error) else \
            f"not a readable .npz file ({type(error).__name__})"
        raise UnreadableWeights(f"{path}: {kind}") from None


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
