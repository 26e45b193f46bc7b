"""bench/torch_reference.py, the PyTorch authors' way that bench.throughput and bench.cpu_vs_torch
time phasescan against: its shapes, its float64 loss, that it learns, and that it is phasescan's
model (the same weights through the .npz interchange layout give the same logits, the same
training steps and the same metrics). Skipped without torch (pip install -e ".[bench]")."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from bench import torch_reference as ref  # noqa: E402
from phasescan.engine import data, metrics, train  # noqa: E402
from phasescan.store import weights

P, D = 11, 16


def model(attn_rate=0.5, seed=0, last_only=False):
    return ref.Transformer(P, D, attn_rate, torch.Generator().manual_seed(seed), last_only=last_only)


def jax_side(m: ref.Transformer):
    """The same weights as phasescan's network: (spec, dataset, net, params)."""
    arrays = ref.to_interchange(m, seed=0)
    assert weights.check(arrays) == []
    spec = train.Spec.from_run({"p": P, "train_frac": 0.8, "d_model": D, "n_layers": 1, "n_heads": 4,
                                "act": "relu", "steps": 1, "batch_size": None, "kind": "transformer",
                                "op": "add", "input_format": "ab", "precision": "float32",
                                "cross_entropy": "accurate", "log_every": None, "dynamics_every": 1})
    dataset = data.Dataset(P)
    net = train.build_net(spec, dataset, jnp.float32(m.attn_rate))
    return spec, dataset, net, weights.to_params(arrays)


def test_forward_shapes_and_last_only():
    tokens, labels = ref.dataset(P)
    assert tokens.shape == (P * P, 2) and labels.shape == (P * P,)
    assert int(labels[P + 3]) == (1 + 3) % P  # row-major pairs: (a, b) = (1, 3)
    full, last = model(), model(last_only=True)
    out = full(tokens)
    assert out.shape == (P * P, P) and out.dtype == torch.float32
    assert full.from_token_vectors(full.embed[tokens[:5]]).shape == (5, P)
    torch.testing.assert_close(last(tokens), out, rtol=1e-5, atol=1e-5)  # the same logits


def test_double_cross_entropy_is_a_float64_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, P)).astype(np.float32) * 8
    logits[:8, 0] += 40.0  # confident: a float32 log-softmax would round these losses to 0
    labels = rng.integers(0, P, 64)
    labels[:8] = 0
    x = logits.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(64), labels])
    got = ref.double_cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    confident = ref.double_cross_entropy(torch.from_numpy(logits[:8]), torch.from_numpy(labels[:8]))
    assert 0 < confident.item() < 1e-12


def test_loss_falls_and_the_log_has_every_step():
    m, (train_idx, test_idx), log = ref.train_model(P, D, 1.0, seed=0, steps=200)
    assert len(train_idx) == ref.n_train(P * P) == 96 and len(test_idx) == 25
    assert len(log) == 200 and all(np.isfinite(entry).all() for entry in log)
    assert log[0][0] == pytest.approx(log[1][0])  # step 0 has learning rate 0 (warm-up)
    losses = [entry[0] for entry in log]
    assert losses[199] < losses[149] < losses[99] < losses[49] < losses[0]
    assert losses[-1] < 0.75 * losses[0]
    rows = ref.final_metrics(m, (train_idx, test_idx), ref.grad_sym_triples(P, 50))
    assert rows["train_loss"] == pytest.approx(log[-1][0], rel=0.2)  # one more step since
    assert 0 <= rows["train_acc"] <= 1 and -1 <= rows["grad_sym"] <= 1 and rows["circularity"] <= 1


@pytest.mark.parametrize("attn_rate", [0.0, 0.7])
def test_same_weights_same_logits_as_phasescan(attn_rate):
    m = model(attn_rate)
    _, dataset, net, params = jax_side(m)
    tokens, _ = ref.dataset(P)
    np.testing.assert_allclose(np.asarray(net.logits(params, dataset.tokens)),
                               m(tokens).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_same_weights_same_training_and_metrics_as_phasescan():
    """20 steps of the authors' AdamW from the same weights and split: the same losses as
    phasescan's loss and optimizer (float32 rounding apart), then the same metrics."""
    steps, rate = 20, 1.0
    m = model(rate, seed=3)
    spec, dataset, net, params = jax_side(m)
    tokens, labels = ref.dataset(P)
    order = torch.randperm(P * P, generator=torch.Generator().manual_seed(3))
    train_idx = order[: ref.n_train(P * P)].sort().values
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=2.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(s / 10, 1.0))
    torch_losses = []
    for _ in range(steps):
        loss = ref.double_cross_entropy(m(tokens[train_idx]), labels[train_idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        torch_losses.append(loss.item())

    hp = train.HParams(*(jnp.float32(x) for x in (0, rate, 1e-3, 2.0, 0.9, 0.98, 10)))
    hp = hp._replace(data_seed=jnp.uint32(0))
    opt = optax.adamw(train.warmup_schedule(hp), b1=hp.beta1, b2=hp.beta2, eps=train.ADAM_EPS,
                      weight_decay=hp.weight_decay)
    idx = jnp.asarray(train_idx.numpy())

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda q: train.mean_loss(
            spec, dataset, hp.attn_rate, q, dataset.tokens[idx], dataset.labels[idx]))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss
    state, jax_losses = opt.init(params), []
    for _ in range(steps):
        params, state, loss = step(params, state)
        jax_losses.append(float(loss))
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=2e-4)

    mask = data.indicator(idx, dataset.n_pairs)
    triples = metrics.grad_sym_triples(P, 50, 0)
    trained = weights.to_params(ref.to_interchange(m, seed=3))
    mine = metrics.evaluate(net, trained, dataset, mask, jnp.asarray(triples), 0.1, n_circles=0)
    theirs = ref.final_metrics(m, (train_idx, order[ref.n_train(P * P):].sort().values), triples)
    for name in ("train_loss", "test_acc", "grad_sym", "dist_irr", "dist_irr_top_wrong", "circularity",
                 "param_norm"):
        np.testing.assert_allclose(theirs[name], float(mine[name]), rtol=1e-3, atol=1e-5, err_msg=name)
