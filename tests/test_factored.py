"""model.forward=factored computes the direct forward's function (engine/model.py): logits and
every parameter's gradient to float32 rounding, on random and trained weights, in every input
format, at attention rates 0 / 0.5 / 1, with both activations; the metrics and the labels of a
trained sweep agree; and a folder trained one way is never resumed the other way."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compose

import phasescan
from phasescan.engine import data
from phasescan.engine.model import Transformer, factored_logits
from phasescan.engine.train import HParams, Spec, make_train
from phasescan.core import grid
from phasescan.core.config import ConfigError

RTOL = 1e-5  # relative to the largest entry: float32 rounding of sums of a few hundred terms


def close(a, b):
    """Every entry of b within RTOL x max|a| of a's."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(b, a, rtol=0, atol=RTOL * np.abs(a).max())


def model_and_params(input_format, act, seed=0, p=13, d=32):
    dataset = data.Dataset(p, "add", input_format)
    model = Transformer(vocab=dataset.vocab, n_ctx=dataset.n_ctx, d_model=d, act=act)
    return dataset, model, model.init(jax.random.key(seed), dataset.tokens[:1], 1.0)


def assert_same_function(dataset, model, params, rate, act):
    direct = lambda P: model.apply(P, dataset.tokens, rate)
    factored = lambda P: factored_logits(P, dataset.tokens, jnp.float32(rate), 4, act)
    close(direct(params), factored(params))
    # the gradient of a loss that weighs every logit differently reaches every parameter
    weights = jax.random.normal(jax.random.key(1), direct(params).shape)
    grad = lambda f: jax.grad(lambda P: jnp.sum(weights * jnp.tanh(f(P))))(params)
    for g_direct, g_factored in zip(jax.tree.leaves(grad(direct)), jax.tree.leaves(grad(factored))):
        close(g_direct, g_factored)


@pytest.mark.parametrize("input_format", ["ab", "ab_eq", "ab_sep"])
@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_factored_logits_and_gradients_equal_direct_on_random_weights(input_format, act, rate):
    dataset, model, params = model_and_params(input_format, act)
    assert_same_function(dataset, model, params, rate, act)


@pytest.mark.parametrize("input_format", ["ab", "ab_sep"])
def test_factored_equals_direct_on_trained_weights(input_format):
    """Weights trained 300 steps (larger, structured): the two forwards still agree."""
    spec = Spec(p=13, train_frac=0.8, d_model=32, n_layers=1, n_heads=4, act="relu", steps=300,
                batch_size=None, input_format=input_format)
    hp = HParams.from_runs([dict(data_seed=0, attn_rate=0.5, lr=1e-3, weight_decay=2.0, beta1=0.9,
                                 beta2=0.98, warmup_steps=10, init_scale=1.0)])
    hp = jax.tree.map(lambda x: x[0], hp)
    params, metrics = make_train(spec, {"grad_sym_triples": 50})(jax.random.key(0), hp)
    assert metrics["train_acc"] > 0.5  # the weights did train
    dataset, model, _ = model_and_params(input_format, "relu")
    assert_same_function(dataset, model, params, 0.5, "relu")


def test_minibatch_rows_are_the_full_batch_rows():
    """A minibatch gathers table rows: its logits are the full batch's rows for those pairs."""
    dataset, _, params = model_and_params("ab", "relu")
    pick = jnp.asarray([5, 0, 77, 12, 168])
    full = factored_logits(params, dataset.tokens, jnp.float32(0.5), 4, "relu")
    close(full[pick], factored_logits(params, dataset.tokens[pick], jnp.float32(0.5), 4, "relu"))


def test_training_follows_the_same_path_both_ways():
    """Both forwards trained 50 steps from the same init: the parameters stay within float32
    rounding amplified by training (measured: 1e-6 of the largest entry, as the same model in
    a vmapped chunk of 3 moves by 3e-7), and every metric agrees. Rounding grows with the steps
    as another chunk layout's does, until a borderline model's label can flip (the demo's labels
    trained both ways: docs/benchmarks.md)."""
    def trained(forward):
        spec = Spec(p=17, train_frac=0.8, d_model=32, n_layers=1, n_heads=4, act="relu", steps=50,
                    batch_size=None, forward=forward)
        hp = HParams.from_runs([dict(data_seed=0, attn_rate=0.5, lr=1e-3, weight_decay=2.0, beta1=0.9,
                                     beta2=0.98, warmup_steps=10, init_scale=1.0)])
        return make_train(spec, {"grad_sym_triples": 50})(jax.random.key(0), jax.tree.map(lambda x: x[0], hp))
    (p_direct, m_direct), (p_factored, m_factored) = trained("direct"), trained("factored")
    for a, b in zip(jax.tree.leaves(p_direct), jax.tree.leaves(p_factored)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())
    for name in ["train_loss", "train_acc", "test_acc", "grad_sym", "dist_irr", "circularity", "param_norm"]:
        np.testing.assert_allclose(m_factored[name], m_direct[name], rtol=1e-3, atol=1e-6, err_msg=name)


def test_runs_record_their_forward(tmp_path):
    frame = phasescan.run([*TINY, "sweep.axes.n_layers=[1,2]", "sweep.axes.attn_rate=[1.0]",
                           "sweep.seeds=1", "train.steps=20"], out_dir=tmp_path / "out")
    assert dict(zip(frame["n_layers"], frame["forward"])) == {1: "factored", 2: "direct"}


def test_the_forward_is_part_of_the_run_id_and_direct_ids_are_unchanged():
    factored = grid.expand(compose(*TINY))
    direct = grid.expand(compose(*TINY, "model.forward=direct"))
    assert {r["forward"] for r in factored} == {"factored"}
    assert not {r["run_id"] for r in factored} & {r["run_id"] for r in direct}
    # a run at direct has the id it had before the field existed
    before = {k: v for k, v in direct[0].items() if k not in ("forward", "run_id")}
    assert direct[0]["run_id"] == grid.run_id(before | {"forward": "direct"})


@pytest.mark.parametrize("override", ["model.n_layers=2", "model=linear_a"])
def test_models_without_a_factored_forward_run_direct(override):
    runs = grid.expand(compose(*TINY, override))
    assert {r["forward"] for r in runs} == {"direct"}


def test_a_swept_depth_decides_each_runs_forward():
    runs = grid.expand(compose(*TINY, "sweep.axes.n_layers=[1,2]"))
    assert {(r["n_layers"], r["forward"]) for r in runs} == {(1, "factored"), (2, "direct")}
    assert all(r["run_id"] == grid.run_id(r) for r in runs)


def test_a_bad_forward_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"model.forward='tabled': must be one of factored, direct"):
        grid.expand(compose(*TINY, "model.forward=tabled"))


def test_a_folder_trained_direct_is_not_resumed_factored(tmp_path):
    out = tmp_path / "out"
    phasescan.run([*TINY, "model.forward=direct"], out_dir=out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(ConfigError, match=r"model.forward: direct -> factored"):
        phasescan.run(TINY, out_dir=out)
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written
