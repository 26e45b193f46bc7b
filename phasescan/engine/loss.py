"""The cross-entropy: the authors' double-precision loss, computed exactly in float32.

The authors cast the logits to float64 before the log-softmax (../shared/reference/clock-pizza.md,
Training). A float32 log-softmax cannot follow a confident model: the loss comes in steps of
~1.2e-7 and the correct class's gradient is exactly 0 once the wrong classes' total probability
falls below ~6e-8, so a model that has fit its training set is pushed around by weight decay
alone and its loss spikes by orders of magnitude (measured: docs/reproduction.md).

`accurate` (the default) writes the loss relative to the correct logit. With d_i = logit_i -
logit_correct and S = sum_{i != correct} exp(d_i):

    loss = log1p(S)                                  when the correct logit is the largest
    loss = m + log1p(expm1(-m) + sum exp(d_i - m))   otherwise, m = max_i d_i > 0

(one expression with m clipped at 0). Its autodiff gradient is exp(d_i) / (1 + S) for a wrong
class and -S / (1 + S) for the correct one, each a sum of small positive terms, so both agree with
a float64 log-softmax to float32 rounding at any margin (tests/test_loss.py). No float64 anywhere.

`float32` is the ordinary float32 log-softmax, kept as an ablation (`train.cross_entropy=float32`): what
the loss's precision does to the phases ("Grokking at the edge of numerical stability", Prieto
et al., ICLR 2025).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.config import CROSS_ENTROPIES


def accurate_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy (N,) of logits (N, V) and integer labels (N,), float32-exact."""
    logits = logits.astype(jnp.float32)  # bfloat16 training: the loss itself in float32
    correct = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    is_correct = jnp.arange(logits.shape[-1]) == labels[:, None]
    margins = jnp.where(is_correct, -jnp.inf, logits - correct)  # d_i; the correct class left out
    # The loss does not depend on the shift mathematically, so no gradient flows through it.
    shift = jax.lax.stop_gradient(jnp.maximum(jnp.max(margins, axis=-1), 0.0))
    wrong = jnp.sum(jnp.exp(margins - shift[:, None]), axis=-1)
    return shift + jnp.log1p(jnp.expm1(-shift) + wrong)


def float32_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The ablation: an ordinary float32 log-softmax (loses the confident regime, see above)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


LOSSES = {"accurate": accurate_cross_entropy, "float32": float32_cross_entropy}
assert tuple(LOSSES) == CROSS_ENTROPIES, "config.CROSS_ENTROPIES names the losses defined here"
