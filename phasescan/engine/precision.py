"""Numerical precision of training (`train.precision`): one policy, applied in one place.

  float32   every matmul in full float32 (XLA precision HIGHEST). What the paper's PyTorch ran:
            PyTorch >= 1.12 keeps `torch.backends.cuda.matmul.allow_tf32 = False` by default,
            so its float32 matmuls are full float32 on any GPU. The default.
  tf32      float32 storage, the backend's DEFAULT matmul precision: TensorFloat-32 (10-bit
            mantissa inputs) on NVIDIA Ampere/Hopper GPUs; identical to float32 on CPU.
  bfloat16  the loss's forward and backward pass in bfloat16 (parameters cast per step); the
            float32 parameters stay the master copy, and the gradients, the AdamW state and
            the update are float32.
The metrics of the trained model are computed in float32 under the same matmul precision, from
the float32 master weights, so precisions are compared on the models, not on the measurement.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.config import PRECISIONS

_MATMUL = {"float32": "highest", "tf32": "default", "bfloat16": "default"}
_COMPUTE = {"float32": jnp.float32, "tf32": jnp.float32, "bfloat16": jnp.bfloat16}
assert set(_MATMUL) == set(_COMPUTE) == set(PRECISIONS)


def matmul_precision(precision: str):
    """Context under which a program is traced: its float32 matmuls use this precision."""
    return jax.default_matmul_precision(_MATMUL[precision])


def compute_dtype(precision: str):
    return _COMPUTE[precision]


def for_compute(tree, precision: str):
    """Cast the floating leaves of `tree` (parameters, per-model scalars) to the compute dtype.

    Differentiating through the cast gives float32 gradients of the float32 master weights.
    """
    dtype = _COMPUTE[precision]
    if dtype == jnp.float32:
        return tree
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def traced_under(precision: str, fn):
    """`fn` with its body traced under the precision's matmul setting (wraps the whole train)."""
    def wrapped(*args, **kwargs):
        with matmul_precision(precision):
            return fn(*args, **kwargs)
    return wrapped

