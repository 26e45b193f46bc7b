"""bench/torch_reference.py, the PyTorch authors' way that bench.throughput and bench.cpu_vs_torch
time phasescan against: its shapes, its float64 loss, that it learns, and that it is phasescan's
model (the same weights through the .npz interchange layout give the same logits, the same
training steps and the same metrics). bench/torch_ensemble.py, the same models as one vmapped
PyTorch ensemble: the same initial weights, splits and logits as the eager models, the same
training losses (eager and under torch.compile) and final rows. Skipped without torch
(pip install -e ".[bench]")."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from bench import torch_ensemble
from bench import torch_reference as ref  # noqa: E402
from phasescan.engine import data, metrics, train  # noqa: E402
from phasescan.store import weights

P, D = 11, 16


def model(attn_rate=0.5, seed=0, last_only=False):
    return ref.Transformer(P, D, attn_rate, torch.Generator().manual_seed(seed), last_only=last_only)


def jax_side(m: ref.Transformer, forward: str = "direct"):
    """The same weights as phasescan's network: (spec, dataset, net, params)."""
    arrays = ref.to_interchange(m, seed=0)
    assert weights.check(arrays) == []
    spec = train.Spec.from_run({"p": P, "train_frac": 0.8, "d_model": D, "n_layers": 1, "n_heads": 4,
                                "act": "relu", "steps": 1, "batch_size": None, "kind": "transformer",
                                "op": "add", "input_format": "ab", "precision": "float32",
                                "cross_entropy": "accurate", "log_every": None, "dynamics_every": 1,
                                "forward": forward})
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


@pytest.mark.parametrize("forward", ["direct", "factored"])
@pytest.mark.parametrize("attn_rate", [0.0, 0.7])
def test_same_weights_same_logits_as_phasescan(attn_rate, forward):
    m = model(attn_rate)
    _, dataset, net, params = jax_side(m, forward)
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


# bench/torch_ensemble.py: the same models, one vmapped ensemble

RUNS = [(0.0, 0), (0.5, 1), (1.0, 2)]  # several attention rates in one ensemble


def eager_runs(steps):
    """(model, log) of torch_reference.train_model for each of RUNS."""
    return [ref.train_model(P, D, rate, seed, steps)[::2] for rate, seed in RUNS]


def test_ensemble_starts_as_the_eager_models_and_gives_their_logits():
    ensemble = torch_ensemble.Ensemble(P, D, RUNS)
    tokens, _ = ref.dataset(P)
    logits = ensemble.logits(tokens)
    assert logits.shape == (len(RUNS), P * P, P)
    per_model = ensemble.logits(ensemble.x_test)  # each model on its own test pairs
    for i, ((rate, seed), unstacked) in enumerate(zip(RUNS, ensemble.models())):
        eager, (train_idx, test_idx), _ = ref.train_model(P, D, rate, seed, steps=0)
        assert torch.equal(ensemble.splits[i][0], train_idx) and torch.equal(ensemble.splits[i][1], test_idx)
        for (name, a), (_, b) in zip(unstacked.named_parameters(), eager.named_parameters()):
            assert torch.equal(a, b), name
        assert unstacked.attn_rate == rate
        with torch.no_grad():
            torch.testing.assert_close(logits[i], eager(tokens), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(per_model[i], eager(tokens[test_idx]), rtol=1e-5, atol=1e-6)


def test_ensemble_trains_each_model_as_the_eager_way():
    """8 steps: the per-model log (train loss, test loss, test accuracy) of train_model, the
    float64 train losses to float64 rounding here, the test losses to float32 rounding; then the
    trained weights unstacked into the eager modules."""
    steps = 8
    ensemble = torch_ensemble.Ensemble(P, D, RUNS)
    logs = ensemble.train(steps)
    for log, model, (eager, eager_log) in zip(logs, ensemble.models(), eager_runs(steps)):
        assert len(log) == steps
        np.testing.assert_allclose(np.array(log), np.array(eager_log), rtol=1e-6)
        for (name, a), (_, b) in zip(model.named_parameters(), eager.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_ensemble_population_rows_are_the_eager_rows():
    """torch_ensemble.train_population: torch_reference.train_population's rows (metrics, labels)."""
    ours = torch_ensemble.train_population(P, D, steps=5, attn_rates=2, seeds=1)
    theirs = ref.train_population(P, D, steps=5, attn_rates=2, seeds=1)
    assert [r.keys() for r in ours] == [r.keys() for r in theirs]
    for a, b in zip(ours, theirs):
        assert (a["attn_rate"], a["seed"], a["algorithm"], a["diverged"]) == \
            (b["attn_rate"], b["seed"], b["algorithm"], b["diverged"])
        for name in ("train_loss", "test_loss", "test_acc", "grad_sym", "dist_irr", "circularity", "param_norm"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow  # the first torch.compile here builds C++ kernels (about a minute on 2 cores)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports (torch.jit)
def test_compiled_ensemble_trains_as_the_eager_way():
    if not hasattr(torch, "compile"):
        pytest.skip("this torch has no torch.compile")
    steps = 3
    ensemble = torch_ensemble.Ensemble(P, D, RUNS)
    try:
        logs = ensemble.train(steps, compile=True)
    except Exception as error:  # inductor needs a working C++ compiler
        if type(error).__name__ in ("BackendCompilerFailed", "InductorError", "CalledProcessError"):
            pytest.skip(f"torch.compile unavailable here: {str(error).splitlines()[0][:200]}")
        raise
    for log, (_, eager_log) in zip(logs, eager_runs(steps)):
        np.testing.assert_allclose(np.array(log), np.array(eager_log), rtol=1e-6)


def test_torch_ensemble_command_writes_the_torch_rows(tmp_path):
    """`python -m bench.cpu_vs_torch torch-ensemble`: the torch sub-command's rows and JSON, and
    the comparison's --ways / --with-compile."""
    from bench import cpu_vs_torch
    args = ["--p", "11", "--d-model", "8", "--steps", "3", "--attn-rates", "2", "--seeds", "1", "--quiet"]
    rows = cpu_vs_torch.main(["torch-ensemble", *args, "--json", str(tmp_path / "rows.json")])
    eager = cpu_vs_torch.main(["torch", *args])
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    assert [r.keys() for r in rows] == [r.keys() for r in eager]
    assert [(r["attn_rate"], r["algorithm"]) for r in rows] == [(r["attn_rate"], r["algorithm"]) for r in eager]
    parsed = cpu_vs_torch.compare_parser().parse_args(["--ways", "phasescan,torch-ensemble", "--with-compile"])
    assert parsed.ways == ["phasescan", "torch-ensemble"] and parsed.with_compile
    with pytest.raises(SystemExit):
        cpu_vs_torch.compare_parser().parse_args(["--ways", "phasescan,tensorflow"])
    command = cpu_vs_torch.torch_command(Path("x.json"), [], "torch-ensemble-compiled")
    assert command[3] == "torch-ensemble" and "--compile" in command
    assert cpu_vs_torch.torch_parser(ensemble=True).parse_args(command[4:]).compile
