"""Metrics on hand-built models with known answers, and the evaluator on saved weights."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, run_cli

from phasescan.engine import metrics
from phasescan.core import classify as classify_module
from phasescan.core.classify import classify
from phasescan.store import weights

P = 13


def test_grad_sym_is_one_when_logits_depend_on_the_sum_of_embeddings():
    key = jax.random.key(0)
    W = jax.random.normal(key, (8, P))
    logits_of = lambda v: jnp.tanh(v[0] + v[1]) @ W  # depends on E[a] + E[b] only
    vectors = jax.random.normal(jax.random.key(1), (50, 2, 8))
    triples = jnp.asarray(metrics.grad_sym_triples(P, 50, 0))
    assert float(metrics.gradient_symmetricity(logits_of, vectors, triples)) == pytest.approx(1.0, abs=1e-6)
    asymmetric = lambda v: jnp.tanh(v[0] + 2 * v[1] ** 2) @ W
    assert float(metrics.gradient_symmetricity(asymmetric, vectors, triples)) < 0.9


def _pairs(p):
    a, b = np.divmod(np.arange(p * p), p)
    return jnp.asarray(a), jnp.asarray(b)


def test_dist_irr_of_clock_and_pizza_tables():
    a, b = _pairs(P)
    w = 2 * np.pi * 3 / P
    rng = np.random.default_rng(0)
    # Clock: the correct logit depends on a + b only; Pizza: it carries |cos(w (a - b) / 2)|.
    clock = jnp.asarray(rng.normal(size=P))[(a + b) % P]
    pizza = jnp.abs(jnp.cos(w * (a - b) / 2))
    assert float(metrics.distance_irrelevance(clock, a, b, P)) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.distance_irrelevance(pizza, a, b, P)) < 0.05
    # The full templates at all (a, b, c), correct class c = a + b:
    c = (a + b) % P
    pizza_full = jnp.abs(jnp.cos(w * (a - b) / 2)) * (jnp.abs(jnp.cos(w * (a + b - c) / 2))
                                                       - jnp.abs(jnp.sin(w * (a + b - c) / 2)))
    assert float(metrics.distance_irrelevance(pizza_full + 1e-3 * clock, a, b, P)) < 0.1


def _one_hot_table(p, correct_value, wrong_value, outputs=None):
    """Logits (p^2, outputs) of all pairs: the correct class (a + b) mod p gets correct_value,
    class (a + b + 1) mod p gets wrong_value (the largest wrong logit), every other class 0."""
    outputs = outputs or p
    a, b = np.divmod(np.arange(p * p), p)
    logits = np.zeros((p * p, outputs), np.float32)
    logits[np.arange(p * p), (a + b) % p] = correct_value
    logits[np.arange(p * p), (a + b + 1) % p] = wrong_value
    return jnp.asarray(logits)


@pytest.mark.parametrize("outputs", [P, P + 1, 2 * P])
def test_dist_irr_top_wrong_reads_the_largest_wrong_logit(outputs):
    """Known answers: a largest wrong logit that depends on a + b only has DI 1 (whatever the
    correct logit does); one that carries |cos(w(a-b)/2)| has DI ~0. Extra outputs (the "="
    token, b's own vocabulary) are wrong classes too."""
    a, b = np.divmod(np.arange(P * P), P)
    w = 2 * np.pi * 3 / P
    rng = np.random.default_rng(0)
    by_sum = 5 + rng.normal(size=P)[(a + b) % P]  # depends on a + b only
    by_distance = 5 + np.abs(np.cos(w * (a - b) / 2))  # depends on a - b only
    key = jnp.ones(P // 2, bool)
    for correct, wrong, want_top, want_correct in [(10 + by_distance, by_sum, 1.0, 0.0),
                                                   (10 + by_sum, by_distance, 0.0, 1.0)]:
        got = metrics.addition_metrics(_one_hot_table(P, correct, wrong, outputs), P, 1, key)
        assert float(got["dist_irr_top_wrong"]) == pytest.approx(want_top, abs=1e-5)
        assert float(got["dist_irr"]) == pytest.approx(want_correct, abs=1e-5)
    # a larger wrong logit among the extra outputs takes over
    if outputs > P:
        table = _one_hot_table(P, 10 + by_sum, by_distance, outputs).at[:, P].set(jnp.asarray(20 + by_sum))
        assert float(metrics.addition_metrics(table, P, 1, key)["dist_irr_top_wrong"]) == \
            pytest.approx(1.0, abs=1e-5)


def test_dist_irr_top_wrong_matches_the_formula_on_random_logits():
    logits = np.random.default_rng(3).normal(size=(P * P, P)).astype(np.float32)
    a, b = np.divmod(np.arange(P * P), P)
    masked = logits.copy()
    masked[np.arange(P * P), (a + b) % P] = -np.inf
    top = masked.max(-1)
    t = (a - b) % P
    want = np.mean([top[t == k].std() for k in range(P)]) / top.std()
    got = metrics.addition_metrics(jnp.asarray(logits), P, 1, jnp.ones(P // 2, bool))
    assert float(got["dist_irr_top_wrong"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("k", [1, 4])
def test_circle_embedding_has_circularity_one_and_its_frequency(k):
    t = np.arange(P)
    basis = np.random.default_rng(1).normal(size=(2, 16))
    rows = jnp.asarray(np.stack([np.cos(2 * np.pi * k * t / P), np.sin(2 * np.pi * k * t / P)], 1) @ basis)
    assert float(metrics.circularity(rows)) == pytest.approx(1.0, abs=1e-4)
    shares = metrics.frequency_shares(rows)
    mask = metrics.key_frequency_mask(shares, 0.1)
    from phasescan.store.results import key_freq_list
    assert key_freq_list(np.asarray(shares), np.asarray(mask)) == [k]


def test_two_circles_and_noise():
    t = np.arange(P)
    rng = np.random.default_rng(2)
    circles = np.stack([np.cos(2 * np.pi * 2 * t / P), np.sin(2 * np.pi * 2 * t / P),
                        0.7 * np.cos(2 * np.pi * 5 * t / P), 0.7 * np.sin(2 * np.pi * 5 * t / P)], 1)
    # Circles in orthogonal planes (as trained models hold them; PCA would mix skewed ones).
    basis = np.linalg.qr(rng.normal(size=(16, 4)))[0].T
    rows = jnp.asarray(circles @ basis)
    assert float(metrics.circularity(rows)) > 0.99
    mask = np.asarray(metrics.key_frequency_mask(metrics.frequency_shares(rows), 0.1))
    assert set(np.flatnonzero(mask) + 1) == {2, 5}
    noise = jnp.asarray(rng.normal(size=(P, 16)))
    assert float(metrics.circularity(noise)) < 0.6


def test_template_fve_recovers_the_generating_template():
    p = 11
    clock_t, pizza_t = metrics.logit_templates(p)
    key = jnp.zeros(p // 2, bool).at[2].set(True)  # frequency 3
    rng = np.random.default_rng(0)
    noise = 0.05 * rng.normal(size=(p, p, p))
    clock_logits = 2.0 * clock_t[2] + noise
    pizza_logits = 2.0 * pizza_t[2] + noise
    assert float(metrics.template_fve(clock_logits, clock_t, key)) > 0.95
    assert float(metrics.template_fve(pizza_logits, pizza_t, key)) > 0.95
    assert float(metrics.template_fve(clock_logits, pizza_t, key)) < float(
        metrics.template_fve(clock_logits, clock_t, key))


def test_circle_rows_keep_one_frequency():
    """An embedding of two circles (frequencies 2 and 5) and an offset: restricted to 2 it is
    exactly the first circle plus the offset, to 5 the second, to 3 only the offset."""
    t = np.arange(P)
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(16, 4)))[0].T
    offset = rng.normal(size=16)
    first = np.stack([np.cos(2 * np.pi * 2 * t / P), np.sin(2 * np.pi * 2 * t / P)], 1) @ basis[:2]
    second = 0.7 * np.stack([np.cos(2 * np.pi * 5 * t / P), np.sin(2 * np.pi * 5 * t / P)], 1) @ basis[2:]
    rows = jnp.asarray(first + second + offset, jnp.float32)
    np.testing.assert_allclose(metrics.circle_rows(rows, 2.0), first + offset, atol=1e-5)
    np.testing.assert_allclose(metrics.circle_rows(rows, 5.0), second + offset, atol=1e-5)
    np.testing.assert_allclose(metrics.circle_rows(rows, 3.0), np.broadcast_to(offset, rows.shape), atol=1e-5)


@pytest.mark.parametrize("k", [2, 5])
def test_single_template_fve_tells_the_templates_apart(k):
    """A logit table that is one template at frequency k: that template explains all of it, the
    other about 80% (the two families share most of their variance), another frequency ~0."""
    clock, pizza = metrics.template_at(P, float(k))
    noise = 0.01 * jnp.asarray(np.random.default_rng(k).normal(size=(P, P, P)), jnp.float32)
    for table, own, other in ((clock + noise, clock, pizza), (pizza + noise, pizza, clock)):
        assert float(metrics.single_template_fve(table, own)) > 0.99
        assert 0.7 < float(metrics.single_template_fve(table, other)) < 0.9
        assert float(metrics.single_template_fve(table, metrics.template_at(P, float(k + 1))[0])) < 0.05


def test_circle_labels_and_the_mixed_rule():
    thresholds = {"min_test_acc": 0.9, "min_circularity": 0.6, "pizza_min_grad_sym": 0.9,
                  "pizza_max_dist_irr": 0.8, "clock_max_grad_sym": 0.8, "clock_min_dist_irr": 0.6,
                  "circle_min_fve": 0.5, "circle_margin": 0.05}
    nan = np.nan
    table = {  # Pizza by GS/DI with a Clock circle; an `other` settled by its circles; Clock
        "grad_sym": np.array([0.99, 0.85, 0.3]), "dist_irr": np.array([0.3, 0.7, 0.85]),
        "circularity": np.ones(3), "test_acc": np.ones(3), "diverged": np.zeros(3, bool),
        "circle_clock_fve": np.array([[0.8, 0.9], [0.78, 0.1], [0.7, nan]]),
        "circle_pizza_fve": np.array([[0.98, 0.7], [0.95, 0.12], [0.55, nan]]),
    }
    circles = classify_module.circle_algorithms(table["circle_clock_fve"], table["circle_pizza_fve"], thresholds)
    assert circles.tolist() == [["pizza", "clock"], ["pizza", "unclear"], ["clock", ""]]
    assert list(classify(table, thresholds)) == ["mixed", "pizza", "clock"]
    # a table (list columns, as in runs.parquet) gives the same labels
    frame = pd.DataFrame({k: list(v) for k, v in table.items()})
    frame["circle_clock_fve"] = [[0.8, 0.9], [0.78, 0.1], [0.7]]
    frame["circle_pizza_fve"] = [[0.98, 0.7], [0.95, 0.12], [0.55]]
    assert list(classify(frame, thresholds)) == ["mixed", "pizza", "clock"]


def test_no_test_set_is_judged_on_all_pairs():
    """train_frac = 1 leaves no test pair: test_acc is NaN and the label uses acc (as the
    evaluator does for a file without its split)."""
    thresholds = {"min_test_acc": 0.9, "min_circularity": 0.6, "pizza_min_grad_sym": 0.9,
                  "pizza_max_dist_irr": 0.8, "clock_max_grad_sym": 0.8, "clock_min_dist_irr": 0.6}
    table = {"grad_sym": [0.99, 0.99], "dist_irr": [0.3, 0.3], "circularity": [1.0, 1.0],
             "test_acc": [np.nan, np.nan], "acc": [1.0, 0.5], "diverged": [False, False]}
    assert list(classify(table, thresholds)) == ["pizza", "unlearned"]


def test_classification_rule():
    thresholds = {"min_test_acc": 0.9, "min_circularity": 0.6, "pizza_min_grad_sym": 0.9,
                  "pizza_max_dist_irr": 0.7, "clock_max_grad_sym": 0.8, "clock_min_dist_irr": 0.6}
    table = pd.DataFrame({  # the paper's Model A and Model B, then each failure mode
        "grad_sym": [0.994, 0.33, 0.6, 0.99, 0.99, 0.99, np.nan],
        "dist_irr": [0.17, 0.85, 0.3, 0.2, 0.2, 0.2, np.nan],
        "circularity": [0.998, 0.999, 0.99, 0.3, 0.99, 0.99, np.nan],
        "test_acc": [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, np.nan],
        "diverged": [False, False, False, False, False, False, True],
    })
    assert list(classify(table, thresholds)) == [
        "pizza", "clock", "other", "non_circular", "unlearned", "pizza", "diverged"]


def test_evaluate_on_saved_weights_reproduces_the_row(tmp_path):
    out = tmp_path / "sweep"
    run_cli(*TINY, "train.steps=150", "save_weights=all", f"out_dir={out}")
    frame = pd.read_parquet(out / "runs.parquet")
    row = frame.iloc[-1]
    path = weights.path_of(out, row["run_id"])
    proc = subprocess.run([sys.executable, "-m", "phasescan.evaluate", str(path),
                           "metrics.grad_sym_triples=50"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for name in ("grad_sym", "dist_irr", "dist_irr_top_wrong", "circularity", "acc", "test_acc",
                 "clock_fve", "pizza_fve"):
        assert result[name] == pytest.approx(row[name], rel=1e-4, abs=1e-5), name
    assert result["key_freqs"] == list(row["key_freqs"])
    for name in ("circle_freqs", "circle_algorithms", "n_clock_circles", "n_pizza_circles"):
        assert result[name] == (list(row[name]) if name.startswith("circle") else row[name]), name
    np.testing.assert_allclose(result["circle_pizza_fve"], list(row["circle_pizza_fve"]), rtol=1e-4, atol=1e-5)
    assert result["algorithm"] == row["algorithm"]
    bad = subprocess.run([sys.executable, "-m", "phasescan.evaluate", str(tmp_path / "nope.npz")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
