"""The model zoo and the tasks: depth, GeLU, input formats, the linear models A-D and X, the
operations beyond addition, sweep.variants, and every variant through the vmapped engine."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose, run_cli

import phasescan
from phasescan.engine import data, metrics
from phasescan.engine.model import ACTIVATIONS
from phasescan.engine.train import Spec, build_net
from phasescan.core import grid, tasks
from phasescan.core.config import ConfigError
from phasescan.store.results import FIELD_COLUMNS, ID_COLUMNS, METRIC_COLUMNS

# Metrics that are NaN by definition for tasks that are not addition up to relabelling b.
ADDITION_ONLY = {"dist_irr", "dist_irr_top_wrong", "clock_fve", "pizza_fve"}
CIRCLE_LISTS = {"circle_freqs", "circle_clock_fve", "circle_pizza_fve", "circle_algorithms"}


def spec_of(**fields) -> Spec:
    base = dict(p=11, train_frac=0.8, d_model=16, n_layers=1, n_heads=4, act="relu", steps=1,
                batch_size=None)
    return Spec(**(base | fields))


def net_and_params(seed=0, attn_rate=0.6, perturb=0.0, **fields):
    """A Net of `fields` and its parameters: initialised, then (perturb > 0) moved to arbitrary
    weights by adding normal noise of that scale to every parameter (biases included)."""
    spec = spec_of(**fields)
    dataset = data.Dataset(spec.p, spec.op, spec.input_format)
    net = build_net(spec, dataset, jnp.float32(attn_rate))
    params = jax.jit(net.init)(jax.random.key(seed))
    if perturb:
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
        leaves = [x + perturb * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        params = jax.tree_util.tree_unflatten(tree, leaves)
    return spec, dataset, net, params


def grad_sym_of(net, params, dataset, triples):
    @jax.jit
    def measure(params, triples):
        vectors = net.token_vectors(params, dataset.tokens_of(triples[:, 0], triples[:, 1]))
        return metrics.gradient_symmetricity(lambda v: net.logits_from_vectors(params, v),
                                             vectors, triples, *dataset.operand_positions)
    return float(measure(params, triples))


# ---------------------------------------------------------------- GeLU and depth


def gelu_exact(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-4, 4, 801)
    np.testing.assert_allclose(np.asarray(ACTIVATIONS["gelu"](jnp.asarray(x, jnp.float32))),
                               gelu_exact(x), atol=2e-6)
    # the tanh approximation (jax's default) is measurably different: the check above can tell
    assert np.max(np.abs(np.asarray(jax.nn.gelu(x, approximate=True)) - gelu_exact(x))) > 1e-4


def hand_forward(params, tokens, attn_rate, n_layers, n_heads):
    """The reference transformer in float64 numpy, written from clock-pizza.md."""
    P = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params["params"])
    h = P["embed"][tokens] + P["pos_embed"]
    for i in range(n_layers):
        L = P[f"layer_{i}"]
        q, k, v = (np.einsum("nsd,hde->nhse", h, L[w]) for w in ("W_Q", "W_K", "W_V"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        soft = np.exp(scores - scores.max(-1, keepdims=True))
        soft /= soft.sum(-1, keepdims=True)
        z = (attn_rate * soft + (1 - attn_rate)) @ v  # (n, head, pos, d_head)
        h = h + z.transpose(0, 2, 1, 3).reshape(*h.shape[:2], -1) @ L["W_O"]
        h = h + gelu_exact(h @ L["W_in"] + L["b_in"]) @ L["W_out"] + L["b_out"]
    return h[:, -1] @ P["unembed"]


@pytest.mark.parametrize("n_layers", [1, 3])
def test_gelu_transformer_matches_hand_computation(n_layers):
    spec, dataset, net, params = net_and_params(attn_rate=0.7, perturb=0.3, act="gelu",
                                                n_layers=n_layers, input_format="ab_eq")
    tokens = dataset.tokens[:40]
    expected = hand_forward(params, np.asarray(tokens), 0.7, n_layers, spec.n_heads)
    # float32 against float64: agree to 1e-4 of the logits' scale (exact vs tanh GeLU: above)
    np.testing.assert_allclose(np.asarray(jax.jit(net.logits)(params, tokens)), expected,
                               rtol=0, atol=1e-4 * np.abs(expected).max())


# ---------------------------------------------------------------- input formats


@pytest.mark.parametrize("fmt, vocab, n_ctx, tokens", [
    ("ab", 11, 2, [3, 5]), ("ab_eq", 12, 3, [3, 5, 11]), ("ab_sep", 22, 2, [3, 16])])
def test_input_formats(fmt, vocab, n_ctx, tokens):
    spec, dataset, net, params = net_and_params(input_format=fmt)
    assert (dataset.vocab, dataset.n_ctx) == (vocab, n_ctx)
    assert dataset.tokens_of(jnp.asarray(3), jnp.asarray(5)).tolist() == tokens
    assert params["params"]["embed"].shape == (vocab, spec.d_model)
    assert params["params"]["pos_embed"].shape == (n_ctx, spec.d_model)
    np.testing.assert_array_equal(net.number_rows(params), params["params"]["embed"][:11])
    # As the authors built it: one output per vocabulary entry, initialised normal / sqrt(vocab),
    # and the loss's softmax over all of them
    assert params["params"]["unembed"].shape == (spec.d_model, vocab)
    assert net.logits(params, dataset.tokens[:5]).shape == (5, vocab)


@pytest.mark.parametrize("fmt", ["ab", "ab_eq", "ab_sep"])
def test_unembedding_is_initialised_by_the_vocabulary(fmt):
    spec, dataset, net, _ = net_and_params(input_format=fmt, d_model=256)
    stds = [np.std(np.asarray(net.init(jax.random.key(s))["params"]["unembed"])) for s in range(4)]
    assert np.mean(stds) == pytest.approx(1 / np.sqrt(dataset.vocab), rel=0.03)


def table_row_grad_sym(net, params, dataset, triples, rows_of):
    """Gradient symmetricity computed independently: differentiate logit c with respect to the
    whole parameter tree and read the embedding-table rows that a and b use (a != b)."""
    grad = jax.jit(jax.grad(lambda prm, tokens, c: net.logits(prm, tokens)[0, c]))
    cosines = []
    for a, b, c in np.asarray(triples):
        g = grad(params, dataset.tokens_of(jnp.asarray([a]), jnp.asarray([b])), c)["params"]
        ga, gb = rows_of(g, a, b)
        cosines.append(np.dot(ga, gb) / (np.linalg.norm(ga) * np.linalg.norm(gb)))
    return float(np.mean(cosines))


@pytest.mark.parametrize("fields, rows_of", [
    ({"input_format": "ab"}, lambda g, a, b: (g["embed"][a], g["embed"][b])),
    ({"input_format": "ab_eq"}, lambda g, a, b: (g["embed"][a], g["embed"][b])),
    ({"input_format": "ab_sep"}, lambda g, a, b: (g["embed"][a], g["embed"][11 + b])),
    ({"kind": "linear_d", "d_model": 32}, lambda g, a, b: (g["embed"][a], g["embed"][b])),
    ({"kind": "linear_x", "d_model": 32}, lambda g, a, b: (g["embed"][a], g["embed_b"][b])),
])
def test_grad_sym_compares_the_embedding_rows_a_and_b_use(fields, rows_of):
    spec, dataset, net, params = net_and_params(perturb=0.2, **fields)
    triples = metrics.grad_sym_triples(spec.p, 30, 1)
    triples = jnp.asarray(triples[triples[:, 0] != triples[:, 1]])
    np.testing.assert_allclose(grad_sym_of(net, params, dataset, triples),
                               table_row_grad_sym(net, params, dataset, triples, rows_of), atol=1e-4)


def test_eq_token_at_attention_rate_zero_is_exactly_symmetric():
    """With the "=" token as the query and attn_rate = 0, a and b enter only through the sum of
    their value vectors, so grad_sym is 1 at any weights; a metric that looked at the wrong
    positions (e.g. b and "=") would not give 1."""
    spec, dataset, net, params = net_and_params(attn_rate=0.0, perturb=0.3, input_format="ab_eq")
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, 50, 0))
    assert grad_sym_of(net, params, dataset, triples) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- linear models


@pytest.mark.parametrize("kind", ["linear_a", "linear_b", "linear_c", "linear_x"])
@pytest.mark.parametrize("perturb", [0.0, 0.5])
def test_linear_models_of_the_sum_have_grad_sym_one_at_any_weights(kind, perturb):
    spec, dataset, net, params = net_and_params(kind=kind, d_model=32, perturb=perturb, seed=3)
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, "all", 0))
    assert grad_sym_of(net, params, dataset, triples) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("perturb", [0.0, 0.5])
def test_linear_model_d_is_not_symmetric(perturb):
    spec, dataset, net, params = net_and_params(kind="linear_d", d_model=32, perturb=perturb, seed=3)
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, "all", 0))
    assert grad_sym_of(net, params, dataset, triples) < 0.9


@pytest.mark.parametrize("kind", ["linear_a", "linear_b", "linear_c", "linear_d", "linear_x"])
def test_linear_initialisation_matches_the_reference(kind):
    """h = 256, p = 59: embeddings normal / sqrt(h/2), U normal / sqrt(h), hidden layers
    PyTorch's nn.Linear default (weight and bias uniform in +-1/sqrt(fan_in))."""
    h, p = 256, 59
    _, _, net, params = net_and_params(kind=kind, p=p, d_model=h)
    prm = jax.tree_util.tree_map(np.asarray, params["params"])
    width = h // 2 if kind == "linear_d" else h
    tables = ["embed", "embed_b"] if kind == "linear_x" else ["embed"]
    hidden = ["W1", "b1", "W2", "b2"] if kind in ("linear_b", "linear_c") else ["W1", "b1"]
    assert set(prm) == set(tables + hidden + ["unembed"])
    for name in tables:
        assert prm[name].shape == (p, width)
        assert prm[name].std() == pytest.approx(1 / math.sqrt(h / 2), rel=0.05)
    assert prm["unembed"].shape == (h, p)
    assert prm["unembed"].std() == pytest.approx(1 / math.sqrt(h), rel=0.05)
    bound = 1 / math.sqrt(h)  # fan_in = h for every hidden layer (D: two h/2 halves)
    for name in hidden:
        x = prm[name]
        assert x.shape == ((h, h) if name.startswith("W") else (h,))
        assert np.abs(x).max() <= bound and np.abs(x).max() > 0.95 * bound
        if name.startswith("W"):
            assert x.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform's std


def test_linear_models_select_their_optimiser():
    cfg = compose("model=linear_b")
    assert cfg["model"]["kind"] == "linear_b"
    assert (cfg["train"]["beta1"], cfg["train"]["beta2"], cfg["train"]["warmup_steps"]) == (0.9, 0.999, 0)
    assert compose("model=linear_b", "train=paper")["train"]["beta2"] == 0.98
    assert compose()["train"]["beta2"] == 0.98


# ---------------------------------------------------------------- tasks


@pytest.mark.parametrize("op, f", [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
                                   ("mul", lambda a, b: a * b), ("sq_sum", lambda a, b: a * a + b * b)])
def test_labels_of_each_operation(op, f):
    p = 13
    expected = [f(a, b) % p for a in range(p) for b in range(p)]
    assert data.labels(p, op).tolist() == expected
    assert data.Dataset(p, op).labels.tolist() == expected


def test_addition_metrics_for_subtraction_and_not_applicable_elsewhere():
    p = 11
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    w = 2 * np.pi / p
    key = jnp.arange(p // 2) == 0  # frequency k = 1
    flat = lambda x: jnp.asarray(x.reshape(p * p, p), jnp.float32)
    s, t = (a - b) % p, (a + b) % p  # subtraction's label and its "distance"
    clock_sub = np.cos(w * (a - b - c)) * (1 + 0.5 * np.cos(w * s))
    pizza_sub = np.abs(np.cos(w * t / 2)) * (np.abs(np.cos(w * (a - b - c) / 2))
                                             - np.abs(np.sin(w * (a - b - c) / 2)))
    measure = jax.jit(metrics.addition_metrics, static_argnums=(1, 2))
    clock = measure(flat(clock_sub), p, -1, key)
    pizza = measure(flat(pizza_sub), p, -1, key)
    assert float(clock["dist_irr"]) == pytest.approx(1.0, abs=1e-5)  # logit depends on s only
    assert float(pizza["dist_irr"]) == pytest.approx(0.0, abs=1e-3)  # ... on t only
    assert float(pizza["pizza_fve"]) == pytest.approx(1.0, abs=1e-4)
    assert float(pizza["pizza_fve"]) > float(pizza["clock_fve"])
    assert float(clock["clock_fve"]) > float(clock["pizza_fve"])
    # reading the same table as addition would be meaningless: the analogue is what carries it
    assert float(measure(flat(pizza_sub), p, 1, key)["pizza_fve"]) < 0.5
    for op in ("mul", "sq_sum"):
        assert tasks.OPS[op].b_sign is None
        assert all(np.isnan(float(v)) for v in metrics.addition_metrics(flat(clock_sub), p, None, key).values())


# ---------------------------------------------------------------- validation and sweep.variants


@pytest.mark.parametrize("overrides, message", [
    (["task.op=div"], "task.op='div': must be one of add, sub, mul, sq_sum"),
    (["task.input_format=abc"], "task.input_format='abc': must be one of ab, ab_eq, ab_sep"),
    (["model.kind=linear_z"], "model.kind='linear_z': must be one of transformer, linear_a"),
    (["task.op=mul", "task.p=12"], "task.p=12: must be prime for task.op=mul"),
    (["model=linear_a", "task.input_format=ab_eq"], "model.kind=linear_a: reads the two tokens"),
    (["model=linear_d", "model.d_model=15"], "must be even for model.kind=linear_d"),
])
def test_bad_zoo_config_is_reported(overrides, message):
    with pytest.raises(ConfigError) as error:
        grid.expand(compose(*TINY, *overrides))
    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_variants_are_a_union_of_grids():
    cfg = compose(*TINY)  # axes: attn_rate [0, 1]; 2 seeds
    cfg["sweep"]["variants"] = [{}, {"n_layers": 2}, {"kind": "linear_a", "beta2": 0.999}]
    runs = grid.expand(cfg)
    assert len(runs) == 3 * 2 * 2 and len(grid.buckets(runs)) == 3
    assert [(r["n_layers"], r["kind"], r["beta2"]) for r in runs[::4]] == [
        (1, "transformer", 0.98), (2, "transformer", 0.98), (1, "linear_a", 0.999)]
    # a variant's run_id is that of the same model reached any other way
    plain = grid.expand(compose(*TINY, "model.n_layers=2"))
    assert [r["run_id"] for r in plain] == [r["run_id"] for r in runs[4:8]]
    for variants, message in [
        ([{}, {"n_layers": 1}], "sweep.variants[1]: repeats runs of sweep.variants[0]"),
        ([{"attn_rate": 0.5}], "sweep.variants[0].attn_rate: also a sweep axis"),
        ([{"depth": 2}], "sweep.variants[0].depth: unknown field"),
        ([{"n_layers": 7}], "sweep.variants[0].n_layers=7: must lie in 1..4"),
    ]:
        cfg["sweep"]["variants"] = variants
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            grid.expand(cfg)


def test_variants_sweep_holds_every_variant():
    runs = grid.expand(compose("sweep=variants"))
    seen = {(r["kind"], r["n_layers"], r["act"], r["input_format"], r["op"]) for r in runs}
    assert {k for k, *_ in seen} == {"transformer", "linear_a", "linear_b", "linear_c", "linear_d", "linear_x"}
    assert {n for _, n, *_ in seen} == {1, 2, 3, 4}
    assert {r["act"] for r in runs} == {"relu", "gelu"}
    assert {r["input_format"] for r in runs} == set(tasks.INPUT_FORMATS)
    assert {r["op"] for r in runs} == set(tasks.OPS)
    assert all((r["beta2"], r["warmup_steps"]) == (0.999, 0) for r in runs if r["kind"] != "transformer")


@pytest.mark.slow
def test_every_variant_trains_through_the_engine_to_a_complete_row(tmp_path):
    """conf/sweep/variants.yaml at tiny size: one bucket per variant, run by the command.

    Its 45 programs (3 a bucket) are the time this test takes: they are compiled at XLA's lowest
    backend optimisation, a third of the compile time. The test asks for complete rows and for
    exact properties (grad_sym = 1 of a sum), not for a trained model's bits."""
    overrides = ["sweep=variants", "task.p=11", "model.d_model=16", "train.steps=30",
                 "metrics.grad_sym_triples=20", "plot=false"]
    cfg = compose(*overrides)
    run_cli(*overrides, f"out_dir={tmp_path / 'zoo'}", env={"XLA_FLAGS": "--xla_backend_optimization_level=0"})
    frame = phasescan.load(tmp_path / "zoo")
    assert len(frame) == len(cfg["sweep"]["variants"]) * cfg["sweep"]["seeds"]
    assert list(frame.columns[: len(ID_COLUMNS + FIELD_COLUMNS)]) == ID_COLUMNS + FIELD_COLUMNS
    for _, row in frame.iterrows():
        where = f"{row['kind']} {row['op']} {row['input_format']} layers={row['n_layers']} {row['act']}"
        applicable = tasks.OPS[row["op"]].b_sign is not None
        for col in METRIC_COLUMNS:
            value = row[col]
            if col in CIRCLE_LISTS:  # circles are measured for additive tasks only
                assert (len(value) > 0) == applicable, f"{col} of {where}: {value}"
            elif col in ADDITION_ONLY and not applicable:
                assert np.isnan(value), f"{col} of {where} must be NaN (not applicable)"
            elif col == "spike_loss" and row["fit_step"] < 0:  # 30 steps: no run fit yet
                assert np.isnan(value) and row["spike_step"] == -1, where
            elif col != "key_freqs":
                assert not pd.isna(value), f"{col} of {where} is missing"
        assert row["algorithm"] not in ("pizza", "clock") or applicable, where
        assert not row["diverged"], where
    linear_sum = frame[frame["kind"].isin(["linear_a", "linear_b", "linear_c", "linear_x"])]
    np.testing.assert_allclose(linear_sum["grad_sym"], 1.0, atol=1e-5)


@pytest.mark.parametrize("fields", [{"kind": "linear_x", "d_model": 32}, {"kind": "linear_b", "d_model": 32},
                                    {"input_format": "ab_sep", "op": "sub", "n_layers": 2}])
def test_weights_files_keep_the_variant(fields):
    from phasescan.store import weights

    spec, _, _, params = net_and_params(perturb=0.1, **fields)
    run = {name: getattr(spec, name) for name in ("p", "d_model", "n_layers", "act", "kind", "op",
                                                  "input_format")} | {"attn_rate": 0.6}
    arrays = weights.to_arrays(params, run)
    back = weights.to_params(arrays)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, params))
    implied = weights.shape_fields(arrays)
    assert {k: implied[k] for k in ("p", "d_model", "kind", "op", "input_format")} == {
        k: run[k] for k in ("p", "d_model", "kind", "op", "input_format")}
