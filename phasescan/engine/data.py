"""The modular-arithmetic dataset: every pair (a, b), its label, and a per-model train mask.

The operation and the input format come from the task registry (tasks.py).

All p^2 pairs are always materialised; which of them a model trains on is drawn from its data
seed (`split`). The train fraction is a bucket field, so every model of a chunk has the same
number of train pairs and a model trains on an index list of static length (the test pairs cost
no FLOPs), while the split itself (the data seed) stays vmappable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core import tasks
from ..core.tasks import n_train


def pairs(p: int) -> tuple[np.ndarray, np.ndarray]:
    """All p^2 operand pairs in row-major order: a = i // p, b = i % p."""
    a, b = np.divmod(np.arange(p * p), p)
    return a.astype(np.int32), b.astype(np.int32)


def labels(p: int, op: str = "add") -> np.ndarray:
    """The label c = op(a, b) mod p of every pair (default: (a + b) mod p)."""
    return tasks.labels(p, op, *pairs(p))


def split(key: jax.Array, n_pairs: int, train_frac: float) -> tuple[jax.Array, jax.Array]:
    """A random split as sorted index lists (train, test): the first n_train pairs of a random
    permutation are train. `train_frac` is a Python float (static shapes); `key` may be traced."""
    order = jax.random.permutation(key, n_pairs)
    n = n_train(n_pairs, train_frac)
    return jnp.sort(order[:n]), jnp.sort(order[n:])


def indicator(indices: jax.Array, n_pairs: int) -> jax.Array:
    """A float 0/1 mask over all pairs, 1 at `indices` (the form the metrics read)."""
    return jnp.zeros(n_pairs, jnp.float32).at[indices].set(1.0)


def train_mask(key: jax.Array, n_pairs: int, train_frac: float) -> jax.Array:
    """The train pairs of `split` as a mask over all pairs."""
    return indicator(split(key, n_pairs, train_frac)[0], n_pairs)


class Dataset:
    """All p^2 pairs of one task as device arrays: tokens (p^2, n_ctx), labels, a, b.

    `op` and `input_format` name entries of tasks.OPS and tasks.INPUT_FORMATS; `vocab` and
    `n_ctx` are what a model reading `tokens` needs; a and b sit at `operand_positions`.
    """

    def __init__(self, p: int, op: str = "add", input_format: str = "ab"):
        self.p = p
        self.op_name, self.op = op, tasks.OPS[op]
        self.input_format = input_format
        self.format = tasks.INPUT_FORMATS[input_format]
        self.vocab, self.n_ctx = self.format.vocab(p), self.format.n_ctx
        self.operand_positions = tasks.OPERAND_POSITIONS
        a, b = pairs(p)
        self.a, self.b = jnp.asarray(a), jnp.asarray(b)
        self.tokens = self.tokens_of(self.a, self.b)
        self.labels = jnp.asarray(labels(p, op))
        self.n_pairs = p * p

    def tokens_of(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """Model input for operand pairs (..., n_ctx): [a, b], [a, b, "="] or [a, p + b]."""
        columns = [a, b + self.p if self.format.separate_b else b]
        if self.format.eq_token:
            columns.append(jnp.full_like(a, self.vocab - 1))
        return jnp.stack(columns, axis=-1)
