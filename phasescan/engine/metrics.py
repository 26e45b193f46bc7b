"""Every metric of a trained model, as pure JAX functions (jit- and vmap-able).

Formulas: ../shared/reference/clock-pizza.md. One model's metrics come from `evaluate`; a sweep
vmaps it over a chunk inside the same jitted program that trains the chunk.

  loss / acc          cross-entropy (loss.py, accurate) and accuracy on train, test and all p^2 pairs
  grad_sym            mean cosine of d logit_c / d E[a] and d logit_c / d E[b] over fixed triples
  dist_irr            mean over t=(a-b) of std over s=(a+b) of the correct logit, / its overall std
  dist_irr_top_wrong  the same of the largest wrong logit (the authors' published tables' DI)
  circularity         best single-frequency energy share of the first 4 principal components
  freq_share          share of the embedding's Fourier energy per frequency 1..p//2
  key_freqs           frequencies with share >= key_freq_min_share (the circles), always >= 1
  clock_fve/pizza_fve fraction of logit variance the Clock / Pizza templates explain at the key
                      frequencies (one least-squares coefficient per key frequency)
  circle_*            per circle (the n strongest key frequencies): the network run on the
                      embedding restricted to that frequency, and the Clock / Pizza template's
                      FVE of its logits at that frequency
  param_norm          L2 norm of all parameters; diverged: non-finite loss or weights

Tasks other than addition (tasks.py): dist_irr and the templates assume c = a + b. For
c = a + b_sign * b (subtraction: b_sign = -1) they are measured after relabelling b -> b_sign * b,
which makes the task addition again (addition_metrics); for any other operation they are NaN
(not applicable). The rest are about the model and its embedding and apply to every task:
grad_sym compares the embedding vectors a and b actually use (positions 0 and 1; with a separate
vocabulary for b that is E[p + b]); circularity and key_freqs use the rows of operand a.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .loss import accurate_cross_entropy

N_PCS = 4  # the reference's circularity uses the first 4 principal components


def grad_sym_triples(p: int, n_triples: int | str, seed: int) -> np.ndarray:
    """The fixed (a, b, c) triples for gradient symmetricity: `n_triples` drawn from `seed`
    (numpy's default_rng, integers in [0, p)), or every one of the p^3 triples for "all"."""
    if n_triples == "all":
        return np.stack(np.meshgrid(*[np.arange(p)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.int32)
    return np.random.default_rng(seed).integers(0, p, size=(int(n_triples), 3)).astype(np.int32)


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean over the entries with weight 1; NaN when there are none (e.g. no test pairs)."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(values * weights) / jnp.maximum(total, 1), jnp.nan)


def distance_irrelevance(correct_logit: jax.Array, a: jax.Array, b: jax.Array, p: int) -> jax.Array:
    """DI = mean_t std_s L[s, t] / std(L), s = (a+b) mod p, t = (a-b) mod p (population stds).

    Grouping by t with segment sums also works when p is even (the (s, t) grid is then half full).
    """
    t = (a - b) % p
    count = jax.ops.segment_sum(jnp.ones_like(correct_logit), t, num_segments=p)
    mean = jax.ops.segment_sum(correct_logit, t, num_segments=p) / count
    # Two passes (deviations from each group's mean), not E[L^2] - E[L]^2: logits of a confident
    # model sit far from 0 and the one-pass form would lose the small spreads to cancellation.
    deviation = correct_logit - mean[t]
    std_per_t = jnp.sqrt(jax.ops.segment_sum(jnp.square(deviation), t, num_segments=p) / count)
    return jnp.mean(std_per_t) / jnp.std(correct_logit)


def gradient_symmetricity(logit_of_vectors: Callable, token_vectors: jax.Array, triples: jax.Array,
                          pos_a: int = 0, pos_b: int = 1) -> jax.Array:
    """Mean cosine similarity of d logit_c / d x_a and d logit_c / d x_b over the triples.

    `logit_of_vectors(vectors (n_ctx, d)) -> logits (p,)`; `token_vectors[i]` holds the embedding
    vectors (before positions) of triple i's input, so the gradient is w.r.t. E[a] and E[b].
    """
    def cosine(vectors, c):
        g = jax.grad(lambda v: logit_of_vectors(v)[c])(vectors)
        ga, gb = g[pos_a], g[pos_b]
        return jnp.dot(ga, gb) / (jnp.linalg.norm(ga) * jnp.linalg.norm(gb) + 1e-30)

    return jnp.mean(jax.vmap(cosine)(token_vectors, triples[:, 2]))


def principal_scores(rows: jax.Array, n: int = N_PCS) -> jax.Array:
    """Scores (n, p) of the p embedding rows on their first n principal components."""
    centered = rows - rows.mean(axis=0)
    u, s, _ = jnp.linalg.svd(centered, full_matrices=False)
    return (u[:, :n] * s[:n]).T


def circularity(rows: jax.Array) -> jax.Array:
    """Mean over the first 4 PCs u of min(1, max_f (2/p)|sum_t u[t f mod p] e^(2 pi i t/p)|^2 / |u|^2).

    PCs with (numerically) no variance are left out of the mean."""
    p = rows.shape[0]
    scores = principal_scores(rows)
    t = jnp.arange(p)
    f = jnp.arange(1, p)
    permuted = scores[:, (t[None, :] * f[:, None]) % p]  # (n_pcs, p-1, p): u[t f mod p]
    phase = jnp.exp(2j * jnp.pi * t / p)
    power = jnp.abs(jnp.einsum("kft,t->kf", permuted.astype(jnp.complex64), phase)) ** 2
    energy = jnp.sum(jnp.square(scores), axis=1)
    share = jnp.minimum((2.0 / p) * power.max(axis=1) / jnp.maximum(energy, 1e-30), 1.0)
    # An embedding of rank < 4 (a single exact circle) has empty PCs: average over the others.
    present = energy > 1e-6 * jnp.sum(energy)
    return jnp.sum(jnp.where(present, share, 0.0)) / jnp.sum(present)


def frequency_shares(rows: jax.Array) -> jax.Array:
    """Share of the embedding's non-constant Fourier energy at each frequency k = 1..p//2."""
    spectrum = jnp.fft.rfft(rows.astype(jnp.float32), axis=0)  # (p//2 + 1, d)
    energy = jnp.sum(jnp.abs(spectrum[1:]) ** 2, axis=1)
    return energy / jnp.sum(energy)


def key_frequency_mask(shares: jax.Array, min_share: float) -> jax.Array:
    """Frequencies holding at least `min_share` of the energy, and always the strongest one."""
    return (shares >= min_share) | (jnp.arange(shares.shape[0]) == jnp.argmax(shares))


def template_at(p: int, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Clock and Pizza templates (p, p, p) over (a, b, c) at frequency k, centred over c:

      Clock: cos(w (a + b - c))
      Pizza: |cos(w (a - b) / 2)| * (|cos(w (a + b - c) / 2)| - |sin(w (a + b - c) / 2)|)
    with w = 2 pi k / p. `k` may be traced (a circle's frequency).
    """
    a = jnp.arange(p, dtype=jnp.float32)[:, None, None]
    b = jnp.arange(p, dtype=jnp.float32)[None, :, None]
    c = jnp.arange(p, dtype=jnp.float32)[None, None, :]
    w = 2 * jnp.pi * k / p
    clock = jnp.cos(w * (a + b - c))
    half = w * (a + b - c) / 2
    pizza = jnp.abs(jnp.cos(w * (a - b) / 2)) * (jnp.abs(jnp.cos(half)) - jnp.abs(jnp.sin(half)))
    centre = lambda x: x - x.mean(axis=-1, keepdims=True)
    return centre(clock), centre(pizza)


def logit_templates(p: int) -> tuple[jax.Array, jax.Array]:
    """Both templates at every frequency k = 1..p//2: (p//2, p, p, p) each."""
    return jax.vmap(lambda k: template_at(p, k))(jnp.arange(1, p // 2 + 1, dtype=jnp.float32))


def template_fve(logits: jax.Array, template: jax.Array, key_mask: jax.Array) -> jax.Array:
    """Fraction of the (c-centred) logit variance explained by a least-squares fit with one
    coefficient per key frequency. `logits` (p, p, p) over (a, b, c); `template` (K, p, p, p)."""
    z = logits - logits.mean(axis=-1, keepdims=True)
    flat = template.reshape(template.shape[0], -1)
    gram = flat @ flat.T
    rhs = flat @ z.reshape(-1)
    m = key_mask.astype(z.dtype)
    # Restrict the normal equations to the key frequencies without changing shapes.
    coef = jnp.linalg.solve(gram * m[:, None] * m[None, :] + jnp.diag(1.0 - m), rhs * m)
    return jnp.dot(coef, rhs * m) / jnp.sum(jnp.square(z))


def single_template_fve(numbers: jax.Array, template: jax.Array) -> jax.Array:
    """Fraction of the (c-centred) logit variance of `numbers` (p, p, p) explained by one
    (c-centred) template with one least-squares coefficient."""
    z = numbers - numbers.mean(axis=-1, keepdims=True)
    dot = jnp.sum(template * z)
    return jnp.square(dot) / (jnp.sum(jnp.square(template)) * jnp.sum(jnp.square(z)))


def relabelled(logits: jax.Array, p: int, b_sign: int) -> jax.Array:
    """Logits (p^2, outputs) of all pairs with b relabelled to b_sign * b, so that a task whose
    label is (a + b_sign * b) mod p reads as addition: row (a, b') holds the pair (a, b_sign b')."""
    return logits.reshape(p, p, -1)[:, (b_sign * jnp.arange(p)) % p, :].reshape(p * p, -1)


def circle_rows(rows: jax.Array, k: jax.Array) -> jax.Array:
    """Rows (p, d) restricted to frequency k: their mean plus their projection on
    cos(2 pi k t / p) and sin(2 pi k t / p) over the tokens t. One circle of the embedding."""
    p = rows.shape[0]
    angle = 2 * jnp.pi * k * jnp.arange(p) / p
    basis = jnp.stack([jnp.cos(angle), jnp.sin(angle)])  # (2, p), orthogonal over t
    # Squared norms p/2 each; at the Nyquist frequency (k = p/2) the sine vanishes.
    norms = jnp.maximum(jnp.sum(jnp.square(basis), axis=1, keepdims=True), 1e-6)
    mean = rows.mean(axis=0)
    return mean + basis.T @ (basis @ (rows - mean) / norms)


def circle_logits(net, params, data, k: jax.Array) -> jax.Array:
    """The network run on all p^2 pairs with the number embeddings restricted to frequency k
    (circle_rows), each operand's own table (a's rows at position 0, b's at position 1: with
    a separate vocabulary for b, its own rows). The rest of the network is left as it is: the
    positional embedding is added and attention is computed from the isolated input, as a
    network that held only this circle would (docs/metrics.md, circles)."""
    p = data.p
    numbers = jnp.arange(p)
    own = net.token_vectors(params, data.tokens_of(numbers, numbers))  # (p, n_ctx, d)
    vectors = net.token_vectors(params, data.tokens)  # (p^2, n_ctx, d)
    for position, operand in zip(data.operand_positions, (data.a, data.b)):
        vectors = vectors.at[:, position].set(circle_rows(own[:, position], k)[operand])
    return net.logits_from_vectors(params, vectors)


def circle_metrics(net, params, data, shares: jax.Array, key_mask: jax.Array,
                   n_circles: int) -> dict:
    """For the model's `n_circles` strongest key frequencies (fewer when it has fewer: frequency
    0 and NaN fill the rest), the fraction of the isolated circle's logit variance that the
    Clock and the Pizza template at that frequency explain. NaN for non-additive tasks."""
    order = jnp.argsort(-shares)[:n_circles]
    present = key_mask[order]
    freqs = jnp.where(present, order + 1, 0)
    if data.op.b_sign is None or n_circles == 0:
        nan = jnp.full((n_circles,), jnp.nan, jnp.float32)
        return {"circle_freq": freqs, "circle_clock_fve": nan, "circle_pizza_fve": nan}
    p = data.p

    def fves(k):
        logits = relabelled(circle_logits(net, params, data, k), p, data.op.b_sign)
        numbers = logits[:, :p].reshape(p, p, p)
        clock, pizza = template_at(p, k)
        return single_template_fve(numbers, clock), single_template_fve(numbers, pizza)

    clock, pizza = jax.lax.map(fves, (order + 1).astype(jnp.float32))
    return {"circle_freq": freqs, "circle_clock_fve": jnp.where(present, clock, jnp.nan),
            "circle_pizza_fve": jnp.where(present, pizza, jnp.nan)}


def largest_wrong_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per pair, the largest logit of any class but the correct one: logits (N, outputs)."""
    is_correct = jnp.arange(logits.shape[-1]) == labels[:, None]
    return jnp.max(jnp.where(is_correct, -jnp.inf, logits), axis=-1)


def addition_metrics(logits: jax.Array, p: int, b_sign: int | None, key_mask: jax.Array) -> dict:
    """dist_irr, dist_irr_top_wrong, clock_fve and pizza_fve of the logits (p^2, outputs) of all
    pairs in row-major order, for a task whose label is (a + b_sign * b) mod p, measured after
    relabelling b -> b_sign * b (which turns the task into addition); NaN for every other task
    (`b_sign` None). `b_sign` is a static Python value, so each bucket's program holds only the
    branch it needs. The distance irrelevances read every output (with an "=" token or b's own
    vocabulary there are more than p: the softmax ran over them all); the templates read the
    number classes c = 0..p-1."""
    if b_sign is None:
        nan = jnp.float32(jnp.nan)
        return {"dist_irr": nan, "dist_irr_top_wrong": nan, "clock_fve": nan, "pizza_fve": nan}
    table = relabelled(logits, p, b_sign)
    a, b = jnp.divmod(jnp.arange(p * p), p)
    labels = (a + b) % p
    correct_logit = jnp.take_along_axis(table, labels[:, None], axis=-1)[:, 0]
    numbers = table[:, :p].reshape(p, p, p)  # over (a, b, c)
    clock_t, pizza_t = logit_templates(p)
    return {
        "dist_irr": distance_irrelevance(correct_logit, a, b, p),
        # The published run tables' variant (reference file, Metrics): the same formula on the
        # largest wrong logit; the paper's phase diagrams are drawn from it.
        "dist_irr_top_wrong": distance_irrelevance(largest_wrong_logit(table, labels), a, b, p),
        "clock_fve": template_fve(numbers, clock_t, key_mask),
        "pizza_fve": template_fve(numbers, pizza_t, key_mask),
    }


def param_norm(params) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(params)))


def all_finite(params) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)]))


def evaluate(net, params, data, train_mask: jax.Array, triples: jax.Array,
             key_freq_min_share: float, n_circles: int = 3) -> dict[str, jax.Array]:
    """All metrics of one trained model.

    `net` is a `train.Net`: the model's functions with its attention rate bound in.
    `data` is a `data.Dataset` (tokens, labels, a, b of all p^2 pairs; its operation decides
    whether the addition metrics apply).
    """
    logits = net.logits(params, data.tokens)  # (p^2, outputs)
    ce = accurate_cross_entropy(logits, data.labels)  # the authors' float64 loss, exactly
    correct = (jnp.argmax(logits, axis=-1) == data.labels).astype(jnp.float32)
    test_mask = 1.0 - train_mask
    ones = jnp.ones_like(train_mask)

    triple_vectors = net.token_vectors(params, data.tokens_of(triples[:, 0], triples[:, 1]))
    rows = net.number_rows(params)
    shares = frequency_shares(rows)
    key_mask = key_frequency_mask(shares, key_freq_min_share)
    train_loss = masked_mean(ce, train_mask)
    diverged = ~(jnp.isfinite(train_loss) & all_finite(params))
    # A diverged model's argmax over non-finite logits is no prediction: no accuracy, not 1/p
    accuracy = lambda mask: jnp.where(diverged, jnp.nan, masked_mean(correct, mask))
    return {
        "train_loss": train_loss,
        "test_loss": masked_mean(ce, test_mask),
        "loss": masked_mean(ce, ones),
        "train_acc": accuracy(train_mask),
        "test_acc": accuracy(test_mask),
        "acc": accuracy(ones),
        "grad_sym": gradient_symmetricity(lambda v: net.logits_from_vectors(params, v),
                                          triple_vectors, triples, *data.operand_positions),
        **addition_metrics(logits, data.p, data.op.b_sign, key_mask),
        "circularity": circularity(rows),
        "freq_share": shares,
        "key_freq_mask": key_mask,
        **circle_metrics(net, params, data, shares, key_mask, n_circles),
        "param_norm": param_norm(params),
        "diverged": diverged,
    }
