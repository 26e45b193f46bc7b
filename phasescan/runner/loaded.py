"""One saved model opened for inspection: `phasescan.load_model(path_or_folder, run_id=None)`.

A `LoadedModel` holds a model of the `.npz` interchange layout (docs/weights-format.md) with its
config, and gives its logits (the engine's own forward pass, as `python -m phasescan.evaluate`
computes them), the inputs of all p^2 pairs, the activations of one forward pass of the
transformer, and the same model as a TransformerLens `HookedTransformer` (runner/transformer_lens.py).
docs/interp.md says what each activation is.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..engine import data
from ..engine.model import ACTIVATIONS
from ..engine.train import Spec, build_net
from ..core import grid
from ..core.config import ConfigError, compose
from ..store import results, weights

LISTED = 20  # run ids named in an error, at most


class LoadedModel:
    """A saved model: `config`, `logits(tokens)`, `all_pairs()`, `all_labels()`,
    `activations(tokens)` (the transformer), `to_transformer_lens()` (the transformer)."""

    def __init__(self, arrays: dict[str, np.ndarray], path: Path | None = None):
        problems = weights.check(arrays)
        if problems:
            where = f"{path}: " if path is not None else ""
            raise ConfigError([where + problem for problem in problems])
        self.arrays = arrays  # the interchange arrays, as read
        self.path = path
        # the direct forward: the reference, and the one activations() writes out step by step
        self.run = default_fields() | weights.shape_fields(arrays) | {"forward": "direct"}
        self.spec = Spec.from_run(self.run)
        self.dataset = data.Dataset(self.spec.p, self.spec.op, self.spec.input_format)
        self.params = jax.tree_util.tree_map(jnp.asarray, weights.to_params(arrays))
        self.config = self._config()

    def _config(self) -> dict:
        spec, dataset = self.spec, self.dataset
        config = {"kind": spec.kind, "p": spec.p, "op": spec.op, "input_format": spec.input_format,
                  "vocab": dataset.vocab, "n_ctx": dataset.n_ctx, "d_model": spec.d_model,
                  "act": spec.act}
        if self.is_transformer:
            config |= {"n_layers": spec.n_layers, "n_heads": spec.n_heads,
                       "d_head": spec.d_model // spec.n_heads, "d_mlp": 4 * spec.d_model,
                       # as written (0.3, not 0.30000001): the shortest text of the float32
                       "attn_rate": float(str(np.float32(self.arrays["attn_rate"]))),
                       "outputs": dataset.vocab}
        else:  # d_model is the hidden width h; no attention, one logit per residue
            config["outputs"] = spec.p
        for key in ("run_id", "seed", "data_seed", "train_frac"):
            if key in self.arrays:
                config[key] = self.arrays[key].item()
        return config

    @property
    def is_transformer(self) -> bool:
        return self.spec.kind == "transformer"

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.config.items()
                          if k in ("kind", "p", "input_format", "d_model", "n_layers", "n_heads",
                                   "act", "attn_rate", "run_id"))
        return f"LoadedModel({shown})"

    # ------------------------------------------------------------------ inputs

    def all_pairs(self) -> np.ndarray:
        """The model input of every pair (p^2, n_ctx), row-major: row i is a = i // p, b = i % p
        ([a, b], [a, b, "="] or [a, p + b] by the input format)."""
        return np.asarray(self.dataset.tokens)

    def all_labels(self) -> np.ndarray:
        """The label op(a, b) mod p of every pair (p^2,), in all_pairs() order."""
        return np.asarray(self.dataset.labels)

    def check_tokens(self, tokens) -> np.ndarray:
        """tokens as an int32 array (..., n_ctx) of ids below the vocabulary (JAX would clamp
        an id out of range without a word)."""
        tokens = np.asarray(tokens)
        n_ctx, vocab = self.dataset.n_ctx, self.dataset.vocab
        if tokens.dtype.kind not in "iu":
            raise ConfigError(f"tokens: must be an integer array (got dtype {tokens.dtype})")
        if tokens.ndim == 0 or tokens.shape[-1] != n_ctx:
            raise ConfigError(f"tokens: must have shape (batch, {n_ctx}) for input_format "
                              f"{self.spec.input_format} (got {tokens.shape}); all_pairs() gives all p^2")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
            raise ConfigError(f"tokens: ids must lie in 0..{vocab - 1} (the vocabulary of "
                              f"input_format {self.spec.input_format}, p={self.spec.p}); got "
                              f"{tokens.min()}..{tokens.max()}")
        return tokens.astype(np.int32)

    # ------------------------------------------------------------------ forward passes

    def logits(self, tokens) -> np.ndarray:
        """Logits (..., outputs) at the last position of tokens (..., n_ctx): the engine's forward
        pass (engine/train.py build_net), as training and the evaluator compute it. outputs is
        the vocabulary for the transformer (p, p + 1 or 2p), p for a linear model."""
        tokens = self.check_tokens(tokens)
        return np.asarray(logits_fn(self.spec)(self.params, tokens, self._rate()))

    def activations(self, tokens) -> dict[str, np.ndarray]:
        """The activations of one forward pass of tokens (batch, n_ctx), named as TransformerLens
        names its hooks (docs/interp.md), every position of every block."""
        if not self.is_transformer:
            raise ConfigError(f"activations(): model.kind={self.spec.kind} is a linear model, no "
                              f"transformer: its forward pass is a few products of model.params "
                              f"(phasescan/engine/linear.py); logits() works for it")
        tokens = self.check_tokens(tokens)
        out = activations_fn(self.spec.n_heads, self.spec.act)(self.params, tokens, self._rate())
        return {name: np.asarray(value) for name, value in out.items()}

    def to_transformer_lens(self, device: str = "cpu"):
        """The same model as a TransformerLens HookedTransformer (pip install "phasescan[interp]"),
        the attention rate applied by a permanent hook on each blocks.{i}.attn.hook_pattern."""
        if not self.is_transformer:
            raise ConfigError(f"to_transformer_lens(): model.kind={self.spec.kind} is a linear "
                              f"model with no attention and no residual stream: it needs no export, "
                              f"its arrays are model.params (phasescan/engine/linear.py)")
        from .transformer_lens import to_hooked_transformer

        return to_hooked_transformer(self.arrays, self.config, device=device)

    def save(self, path) -> Path:
        """Write the model as a weights .npz (docs/weights-format.md); returns the path."""
        path = Path(path)
        weights.save(path, self.arrays)
        return path

    def _rate(self) -> jax.Array:
        return jnp.float32(self.arrays["attn_rate"])


@functools.lru_cache(maxsize=1)
def _default_fields() -> tuple:
    return tuple(grid.base_fields(compose()).items())


def default_fields() -> dict:
    """The default config's fields (what the evaluator assumes for the ones a file does not
    imply), composed once per process."""
    return dict(_default_fields())


@functools.lru_cache(maxsize=None)
def logits_fn(spec: Spec):
    """jit(params, tokens, attn_rate) -> logits of the bucket's Net: one compilation per shape."""
    dataset = data.Dataset(spec.p, spec.op, spec.input_format)
    return jax.jit(lambda params, tokens, rate: build_net(spec, dataset, rate).logits(params, tokens))


@functools.lru_cache(maxsize=None)
def activations_fn(n_heads: int, act: str):
    """jit(params, tokens, attn_rate) -> {hook name: activation}: engine/model.py's forward pass
    written out step by step (the same operations in the same order), every position kept
    (model.py skips the queries and MLP of the last block's earlier positions, which no logit
    reads). tests/test_interp.py holds it to the model's logits and blocks."""

    def forward(params, tokens, rate):
        tree = params["params"]
        embed = tree["embed"][tokens]
        pos = jnp.broadcast_to(tree["pos_embed"], embed.shape)
        out = {"hook_embed": embed, "hook_pos_embed": pos}
        h = embed + tree["pos_embed"]
        n_layers = sum(name.startswith("layer_") for name in tree)
        for i in range(n_layers):
            layer, name = tree[f"layer_{i}"], f"blocks.{i}"
            d_head = layer["W_Q"].shape[-1]
            out[f"{name}.hook_resid_pre"] = h
            q = jnp.einsum("...qd,hde->...hqe", h, layer["W_Q"])
            k = jnp.einsum("...kd,hde->...hke", h, layer["W_K"])
            v = jnp.einsum("...kd,hde->...hke", h, layer["W_V"])
            scores = jnp.einsum("...hqe,...hke->...hqk", q, k) / math.sqrt(d_head)
            pattern = rate * jax.nn.softmax(scores, axis=-1) + (1.0 - rate)
            z = jnp.einsum("...hqk,...hke->...qhe", pattern, v)
            attn_out = z.reshape(*z.shape[:-2], n_heads * d_head) @ layer["W_O"]
            mid = h + attn_out
            pre = mid @ layer["W_in"] + layer["b_in"]
            post = ACTIVATIONS[act](pre)
            mlp_out = post @ layer["W_out"] + layer["b_out"]
            h = mid + mlp_out
            out |= {f"{name}.attn.hook_q": jnp.swapaxes(q, -2, -3),  # (batch, pos, head, d_head)
                    f"{name}.attn.hook_k": jnp.swapaxes(k, -2, -3),
                    f"{name}.attn.hook_v": jnp.swapaxes(v, -2, -3),
                    f"{name}.attn.hook_attn_scores": scores,  # (batch, head, query, key)
                    f"{name}.attn.hook_pattern": pattern,
                    f"{name}.attn.hook_z": z,
                    f"{name}.hook_attn_out": attn_out,
                    f"{name}.hook_resid_mid": mid,
                    f"{name}.mlp.hook_pre": pre,
                    f"{name}.mlp.hook_post": post,
                    f"{name}.hook_mlp_out": mlp_out,
                    f"{name}.hook_resid_post": h}
        out["logits"] = h[..., -1, :] @ tree["unembed"]
        return out

    return jax.jit(forward)


# ---------------------------------------------------------------------- opening a file or folder


def load_model(path_or_folder, run_id: str | None = None) -> LoadedModel:
    """A saved model: a weights .npz (docs/weights-format.md), or a results folder and one of the
    runs whose weights it kept (OUT_DIR/weights/<run_id>.npz; save_weights=all or =K). run_id may
    be any unique prefix; it may be omitted where the folder kept one model. A bad path, a
    missing, ambiguous or unknown run_id, or a file not in the layout raise ConfigError naming
    the choices."""
    path = Path(path_or_folder)
    if path.is_dir():
        unkept = row_without_weights(path, run_id)
        if unkept is not None:  # trained again with its chunk, as its sweep trained it
            from .retrain import load_or_retrain, retrained_path
            return LoadedModel(load_or_retrain(path, [unkept])[0], retrained_path(path, unkept))
        path = file_in_folder(path, run_id)
    elif not path.exists():
        raise ConfigError(f"{path}: no such file or folder (expected a weights .npz or a results folder)")
    try:
        arrays = weights.load(path)
    except weights.UnreadableWeights as error:
        raise ConfigError(f"cannot read {error}") from None
    if run_id is not None and "run_id" in arrays and not str(arrays["run_id"]).startswith(str(run_id)):
        raise ConfigError(f"run_id={run_id!r}: {path} holds run {arrays['run_id']} (a file holds "
                          f"one model; give its folder to choose among several)")
    return LoadedModel(arrays, path)


def file_in_folder(folder: Path, run_id: str | None) -> Path:
    """The weights file of run_id (a unique prefix) in a results folder or its weights/ folder."""
    kept_dir = folder / weights.WEIGHTS_DIR if (folder / weights.WEIGHTS_DIR).is_dir() else folder
    kept = sorted(p.stem for p in kept_dir.glob("*.npz") if not results.is_temporary(p))
    if not kept:
        sweep = (folder / results.RUNS).is_file() or (folder / results.CONFIG).is_file()
        why = ("this sweep kept no weights: run it with save_weights=all (or save_weights=K, the "
               "first K seeds of every cell)" if sweep else
               "no weights/ folder and no .npz here (expected a results folder or a weights .npz)")
        raise ConfigError(f"{folder}: {why}")
    if run_id is None:
        if len(kept) == 1:
            return kept_dir / f"{kept[0]}.npz"
        raise ConfigError(f"{folder}: {len(kept)} models kept: choose one with run_id= "
                          f"(the run_id column of phasescan.load) among {choices(folder, kept)}")
    run_id = str(run_id)
    matches = [k for k in kept if k.startswith(run_id)] if run_id else []
    if len(matches) == 1:
        return kept_dir / f"{matches[0]}.npz"
    if matches:
        raise ConfigError(f"run_id={run_id!r}: ambiguous in {folder}, {len(matches)} kept models "
                          f"start with it: {choices(folder, matches)}")
    raise ConfigError(f"run_id={run_id!r}: {unknown_reason(folder, run_id)}; the kept models of "
                      f"{folder}: {choices(folder, kept)}")


def row_without_weights(folder: Path, run_id: str | None) -> str | None:
    """The run_id of the one row of a sweep folder that run_id (a prefix) names, when the sweep
    did not keep its weights (None: no such row, several, or its weights are kept)."""
    if run_id is None or not (folder / results.CONFIG).is_file():
        return None
    table = runs_table(folder)
    if table is None or "run_id" not in table:
        return None
    matches = [i for i in table["run_id"].astype(str) if i.startswith(str(run_id))]
    if len(matches) != 1 or weights.path_of(folder, matches[0]).is_file():
        return None
    return matches[0]


def unknown_reason(folder: Path, run_id: str) -> str:
    table = runs_table(folder)
    if table is not None and run_id and table["run_id"].astype(str).str.startswith(run_id).any():
        return "its weights were not kept by the sweep (save_weights)"
    return "no such run"


def runs_table(folder: Path):
    """The folder's runs table where one can be read quietly, else None."""
    try:
        if (folder / results.RUNS).is_file():
            return results.read_table(folder / results.RUNS)
        return results.read_chunks(folder, quiet=True)
    except Exception:  # a listing aid only: the error being reported is the run_id's
        return None


def choices(folder: Path, run_ids: list[str]) -> str:
    """The run ids, each with the fields that tell the listed runs apart (from the runs table)."""
    described = {run_id: "" for run_id in run_ids}
    table = runs_table(folder)
    if table is not None and "run_id" in table:
        rows = table[table["run_id"].astype(str).isin(run_ids)].set_index("run_id")
        fields = [name for name in [*grid.FIELDS, "seed"]
                  if name in rows and rows[name].astype(str).nunique() > 1]
        for run_id, row in rows.iterrows():
            described[run_id] = " (" + ", ".join(f"{f}={row[f]}" for f in fields) + ")" if fields else ""
    listed = [f"{run_id}{described[run_id]}" for run_id in run_ids[:LISTED]]
    more = f", ... ({len(run_ids) - LISTED} more)" if len(run_ids) > LISTED else ""
    return ", ".join(listed) + more
