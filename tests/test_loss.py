"""The training loss against a float64 reference: values and gradients to float32 rounding, at
ordinary and at very confident margins (where a float32 log-softmax returns 0)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phasescan.engine.loss import accurate_cross_entropy, float32_cross_entropy


def float64_reference(logits: np.ndarray, labels: np.ndarray):
    """Cross-entropy and its gradient in float64, written relative to the correct logit so
    float64 itself does not round a tiny loss to 0: loss = log(1 + S), S = sum_{i != c} e^{d_i}."""
    x = logits.astype(np.float64)
    rows = np.arange(len(x))
    d = x - x[rows, labels][:, None]
    d[rows, labels] = -np.inf
    m = np.maximum(d.max(-1), 0.0)
    wrong = np.exp(d - m[:, None])  # e^{d_i - m}
    total = np.exp(-m) + wrong.sum(-1)  # (1 + S) e^{-m}
    loss = m + np.where(m > 0, np.log(total), np.log1p(wrong.sum(-1)))
    grad = wrong / total[:, None]  # softmax of the wrong classes
    grad[rows, labels] = -grad.sum(-1)  # -S / (1 + S), summed, not 1 - softmax
    return loss, grad


def ours(fn, logits, labels):
    x, y = jnp.asarray(logits), jnp.asarray(labels)
    value = fn(x, y)
    grad = jax.grad(lambda z: jnp.sum(fn(z, y)))(x)
    return np.asarray(value, np.float64), np.asarray(grad, np.float64)


def batch(margin: float, scale: float, n=256, classes=31, seed=0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(n, classes))).astype(np.float32)
    labels = rng.integers(0, classes, n)
    logits[np.arange(n), labels] += margin
    return logits, labels


@pytest.mark.parametrize("margin,scale", [(0.0, 1.0), (0.0, 8.0), (5.0, 1.0), (20.0, 1.0),
                                          (30.0, 2.0), (40.0, 1.0), (-10.0, 3.0)])
def test_matches_float64_to_float32_rounding(margin, scale):
    logits, labels = batch(margin, scale)
    want_loss, want_grad = float64_reference(logits, labels)
    loss, grad = ours(accurate_cross_entropy, logits, labels)
    # float32 rounding: a few ulps relative, plus the float32 subnormal floor for the tiniest terms
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6, atol=1e-37)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-37)
    # and against the plain float64 log-softmax, which is itself exact only to float64 rounding
    # of the largest logit (~1e-14 absolute here)
    x = logits.astype(np.float64)
    plain = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1) - x[np.arange(len(x)), labels]
    np.testing.assert_allclose(loss, plain, rtol=2e-6, atol=1e-13)


def test_confident_correct_class_gradient_is_not_zero():
    """At margins 20-40 a float32 log-softmax gives the correct class a zero gradient (the
    failure that makes trained models spike); the accurate loss gives -S / (1 + S)."""
    logits, labels = batch(margin=25.0, scale=1.0)
    rows = np.arange(len(labels))
    _, want = float64_reference(logits, labels)
    _, accurate = ours(accurate_cross_entropy, logits, labels)
    _, ablation = ours(float32_cross_entropy, logits, labels)
    assert np.all(want[rows, labels] < 0)
    np.testing.assert_allclose(accurate[rows, labels], want[rows, labels], rtol=1e-5)
    assert np.mean(ablation[rows, labels] == 0.0) > 0.9  # the ablation really is the failure


def test_bfloat16_logits_are_measured_in_float32():
    logits, labels = batch(margin=3.0, scale=1.0, n=16)
    low = jnp.asarray(logits).astype(jnp.bfloat16)
    value = accurate_cross_entropy(low, jnp.asarray(labels))
    assert value.dtype == jnp.float32
    want, _ = float64_reference(np.asarray(low.astype(jnp.float32)), labels)
    np.testing.assert_allclose(np.asarray(value), want, rtol=2e-6)
