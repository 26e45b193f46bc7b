"""phasescan.load_model (runner/loaded.py) and its TransformerLens export (runner/transformer_lens.py):
a saved model's logits, activations and HookedTransformer, on tiny models (p 11, d 16) with
random weights at the engine's initial scales (arrays_of). The TransformerLens tests are skipped
where transformer_lens is not installed; the others always run."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import phasescan
from phasescan.engine import data
from phasescan.engine.model import Block
from phasescan.engine.train import Spec, build_net
from phasescan.core.config import ConfigError
from phasescan.store import results, weights

P, D = 11, 16
FORMATS = ("ab", "ab_eq", "ab_sep")
RATES = (0.0, 0.5, 1.0)


# The engine's initial scales (engine/model.py: normal / sqrt(dim)), by parameter name.
SCALE_DIM = {"embed": "d", "pos_embed": "d", "unembed": "vocab", "W_Q": "d", "W_K": "d", "W_V": "d",
             "W_O": "d", "W_in": "d_mlp", "W_out": "d"}


def arrays_of(seed=0, attn_rate=0.5, input_format="ab", n_layers=1, act="relu", kind="transformer",
              run_id="0123456789ab"):
    """The interchange dict of a random model: the engine's parameter tree (its names and shapes,
    jax.eval_shape of its init: nothing compiled) drawn at the engine's initial scales, the
    zero-initialised biases drawn too (normal / sqrt(size)) so that a misplaced bias shows. (A
    jitted Flax init costs seconds per shape on the 2-core CPU.)"""
    spec = Spec(p=P, train_frac=0.8, d_model=D, n_layers=n_layers, n_heads=4, act=act, steps=1,
                batch_size=None, kind=kind, input_format=input_format)
    dataset = data.Dataset(P, "add", input_format)
    shapes = jax.eval_shape(build_net(spec, dataset, jnp.float32(attn_rate)).init, jax.random.key(0))
    dims = {"d": D, "d_mlp": 4 * D, "vocab": dataset.vocab}
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        std = 1 / np.sqrt(dims[SCALE_DIM[name]]) if name in SCALE_DIM else 1 / np.sqrt(leaf.shape[0])
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    run = {"p": P, "act": act, "attn_rate": attn_rate, "n_layers": n_layers, "kind": kind,
           "input_format": input_format, "run_id": run_id, "seed": seed}
    return weights.to_arrays(params, run)


def saved(tmp_path, name="model", **fields):
    path = tmp_path / f"{name}.npz"
    weights.save(path, arrays_of(**fields))
    return path


def engine_logits(arrays):
    """The logits of all pairs as the evaluator computes them (runner/evaluate.py)."""
    fields = weights.shape_fields(arrays)
    spec = Spec(p=P, train_frac=0.8, d_model=fields["d_model"], n_layers=fields.get("n_layers", 1),
                n_heads=fields.get("n_heads", 4), act=fields["act"], steps=1, batch_size=None,
                kind=fields.get("kind", "transformer"), input_format=fields.get("input_format", "ab"))
    dataset = data.Dataset(P, "add", spec.input_format)
    net = build_net(spec, dataset, jnp.float32(arrays["attn_rate"]))
    return np.asarray(jax.jit(net.logits)(weights.to_params(arrays), dataset.tokens))


# ---------------------------------------------------------------- load_model


def test_load_model_is_the_api_and_gives_the_engine_logits(tmp_path):
    assert "load_model" in phasescan.__all__
    arrays = arrays_of(attn_rate=0.5, input_format="ab_eq", n_layers=2, act="gelu")
    weights.save(tmp_path / "m.npz", arrays)
    model = phasescan.load_model(tmp_path / "m.npz")
    assert {k: model.config[k] for k in ("kind", "p", "input_format", "vocab", "n_ctx", "d_model",
                                     "n_layers", "n_heads", "d_head", "d_mlp", "act", "run_id")} == {
        "kind": "transformer", "p": P, "input_format": "ab_eq", "vocab": P + 1, "n_ctx": 3,
        "d_model": D, "n_layers": 2, "n_heads": 4, "d_head": 4, "d_mlp": 4 * D, "act": "gelu",
        "run_id": "0123456789ab"}
    assert model.config["attn_rate"] == 0.5
    tokens = model.all_pairs()
    assert tokens.shape == (P * P, 3) and tokens[P + 2].tolist() == [1, 2, P]
    assert model.all_labels()[P + 2] == 3
    np.testing.assert_array_equal(model.logits(tokens), engine_logits(arrays))
    assert model.logits(tokens[5]).shape == (P + 1,)  # one input: (n_ctx,)


@pytest.mark.parametrize("input_format,n_layers,act,rate",
                         [("ab", 1, "relu", 0.0), ("ab_eq", 2, "gelu", 0.3), ("ab_sep", 2, "relu", 1.0)])
def test_activations_are_the_models_forward_pass(tmp_path, input_format, n_layers, act, rate):
    model = phasescan.load_model(saved(tmp_path, attn_rate=rate, input_format=input_format,
                                       n_layers=n_layers, act=act))
    tokens = model.all_pairs()
    acts = model.activations(tokens)
    n, t, d, m = P * P, model.config["n_ctx"], D, 4 * D
    expected = {"hook_embed": (n, t, d), "hook_pos_embed": (n, t, d), "logits": (n, model.config["vocab"])}
    for i in range(n_layers):
        b = f"blocks.{i}"
        expected |= {f"{b}.hook_resid_pre": (n, t, d), f"{b}.attn.hook_q": (n, t, 4, 4),
                     f"{b}.attn.hook_k": (n, t, 4, 4), f"{b}.attn.hook_v": (n, t, 4, 4),
                     f"{b}.attn.hook_attn_scores": (n, 4, t, t), f"{b}.attn.hook_pattern": (n, 4, t, t),
                     f"{b}.attn.hook_z": (n, t, 4, 4), f"{b}.hook_attn_out": (n, t, d),
                     f"{b}.hook_resid_mid": (n, t, d), f"{b}.mlp.hook_pre": (n, t, m),
                     f"{b}.mlp.hook_post": (n, t, m), f"{b}.hook_mlp_out": (n, t, d),
                     f"{b}.hook_resid_post": (n, t, d)}
    assert {k: v.shape for k, v in acts.items()} == expected
    np.testing.assert_allclose(acts["logits"], model.logits(tokens), rtol=1e-5, atol=1e-5)
    params = model.params["params"]
    np.testing.assert_array_equal(acts["hook_embed"], np.asarray(params["embed"])[tokens])
    h = acts["hook_embed"] + acts["hook_pos_embed"]
    for i in range(n_layers):
        b = f"blocks.{i}"
        np.testing.assert_allclose(acts[f"{b}.hook_resid_pre"], h, rtol=1e-6, atol=1e-6)
        # the block of engine/model.py, every position kept, gives the same residual stream
        block = jax.jit(Block(D, 4, act, last_only=False).apply)
        out = block({"params": params[f"layer_{i}"]}, jnp.asarray(h), jnp.float32(rate))
        np.testing.assert_allclose(acts[f"{b}.hook_resid_post"], out, rtol=1e-5, atol=1e-5)
        pattern = acts[f"{b}.attn.hook_pattern"]  # after the rate: rows sum to rate + (1 - rate) n_ctx
        scores = acts[f"{b}.attn.hook_attn_scores"]
        softmax = np.exp(scores - scores.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        np.testing.assert_allclose(pattern, rate * softmax + (1 - rate), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(pattern.sum(-1), rate + (1 - rate) * t, rtol=1e-5)
        post = acts[f"{b}.mlp.hook_post"]
        assert (post >= 0).all() if act == "relu" else (post < 0).any()
        np.testing.assert_allclose(acts[f"{b}.hook_resid_mid"] + acts[f"{b}.hook_mlp_out"],
                                   acts[f"{b}.hook_resid_post"], rtol=1e-6, atol=1e-6)
        h = np.asarray(out)


def results_folder(tmp_path, kept, table_ids=None):
    """A results folder whose sweep kept `kept` (run_id -> attn_rate) in weights/, with a runs
    table of table_ids (default: the kept ones)."""
    folder = tmp_path / "sweep"
    for seed, (run_id, rate) in enumerate(kept.items()):
        weights.save(weights.path_of(folder, run_id), arrays_of(seed=seed, attn_rate=rate, run_id=run_id))
    rows = table_ids or kept
    frame = pd.DataFrame({"run_id": list(rows), "attn_rate": [kept.get(r, 0.25) for r in rows],
                          "d_model": D, "seed": 0})
    results.write_table(folder / results.RUNS, frame, "runs")
    return folder


def test_a_folders_model_by_run_id_and_the_choices_named(tmp_path):
    kept = {"aaa111111111": 0.0, "aaa222222222": 0.5, "bbb333333333": 1.0}
    folder = results_folder(tmp_path, kept, [*kept, "ccc444444444"])
    with pytest.raises(ConfigError, match="3 models kept: choose one with run_id=") as missing:
        phasescan.load_model(folder)
    for run_id, rate in kept.items():  # each listed with the field that tells them apart
        assert f"{run_id} (attn_rate={rate})" in str(missing.value)
    assert phasescan.load_model(folder, "bbb").config["run_id"] == "bbb333333333"
    model = phasescan.load_model(folder, run_id="aaa222222222")
    assert model.config["attn_rate"] == 0.5 and model.path == weights.path_of(folder, "aaa222222222")
    assert phasescan.load_model(folder / "weights", "aaa1").config["run_id"] == "aaa111111111"
    with pytest.raises(ConfigError, match=r"run_id='aaa': ambiguous .* 2 kept models start with it: "
                                          r"aaa111111111 \(attn_rate=0.0\), aaa222222222"):
        phasescan.load_model(folder, "aaa")
    with pytest.raises(ConfigError, match=r"run_id='zzz': no such run; the kept models of .*aaa111111111"):
        phasescan.load_model(folder, "zzz")
    with pytest.raises(ConfigError, match=r"run_id='ccc4': its weights were not kept by the sweep \(save_weights\)"):
        phasescan.load_model(folder, "ccc4")
    with pytest.raises(ConfigError, match="holds run aaa111111111"):
        phasescan.load_model(weights.path_of(folder, "aaa111111111"), "bbb")


def test_a_folder_of_one_model_or_none(tmp_path):
    folder = results_folder(tmp_path, {"aaa111111111": 0.5})
    assert phasescan.load_model(folder).config["run_id"] == "aaa111111111"
    empty = tmp_path / "empty"
    empty.mkdir()
    results.write_table(empty / results.RUNS, pd.DataFrame({"run_id": ["x"]}), "runs")
    with pytest.raises(ConfigError, match="this sweep kept no weights: run it with save_weights=all"):
        phasescan.load_model(empty)
    with pytest.raises(ConfigError, match="no such file or folder"):
        phasescan.load_model(tmp_path / "nowhere")


def test_bad_files_and_tokens_are_refused(tmp_path):
    arrays = arrays_of()
    del arrays["W_Q"]
    weights.save(tmp_path / "bad.npz", arrays)
    with pytest.raises(ConfigError, match="W_Q: missing"):
        phasescan.load_model(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        phasescan.load_model(tmp_path / "junk.npz")
    model = phasescan.load_model(saved(tmp_path, input_format="ab_sep"))
    with pytest.raises(ConfigError, match=r"ids must lie in 0..21"):
        model.logits(np.array([[0, 22]]))
    with pytest.raises(ConfigError, match=r"must have shape \(batch, 2\)"):
        model.activations(np.zeros((4, 3), int))
    with pytest.raises(ConfigError, match="integer array"):
        model.logits(np.zeros((4, 2)))


def test_a_linear_model_gives_logits_and_needs_no_export(tmp_path, monkeypatch):
    arrays = arrays_of(kind="linear_b")
    weights.save(tmp_path / "lin.npz", arrays)
    model = phasescan.load_model(tmp_path / "lin.npz")
    assert model.config["kind"] == "linear_b" and "n_heads" not in model.config
    np.testing.assert_array_equal(model.logits(model.all_pairs()), engine_logits(arrays))
    with pytest.raises(ConfigError, match="linear model"):
        model.activations(model.all_pairs())
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # refused before any import
    with pytest.raises(ConfigError, match="needs no export"):
        model.to_transformer_lens()


def test_without_transformer_lens_the_error_says_what_to_install(tmp_path, monkeypatch):
    model = phasescan.load_model(saved(tmp_path))
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install "phasescan\[interp\]"'):
        model.to_transformer_lens()


# ---------------------------------------------------------------- TransformerLens


@pytest.fixture(scope="module")
def torch():
    pytest.importorskip("transformer_lens")
    import torch
    return torch


def hooked_logits(torch, hooked, tokens):
    with torch.no_grad():
        return hooked(torch.tensor(tokens), return_type="logits")[:, -1].numpy()


@pytest.mark.parametrize("input_format", FORMATS)
@pytest.mark.parametrize("n_layers,act", [(1, "relu"), (2, "gelu")])
def test_the_hooked_transformer_gives_phasescans_logits(tmp_path, torch, input_format, n_layers, act):
    for rate in RATES:
        model = phasescan.load_model(saved(tmp_path, attn_rate=rate, input_format=input_format,
                                           n_layers=n_layers, act=act))
        hooked = model.to_transformer_lens()
        tokens = model.all_pairs()
        np.testing.assert_allclose(hooked_logits(torch, hooked, tokens), model.logits(tokens),
                                   rtol=1e-5, atol=1e-5, err_msg=f"attn_rate {rate}")


def test_the_hooked_transformer_is_phasescans_model(tmp_path, torch):
    model = phasescan.load_model(saved(tmp_path, attn_rate=0.3, input_format="ab_eq", n_layers=2, act="gelu"))
    hooked = model.to_transformer_lens()
    cfg = hooked.cfg
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx, cfg.d_model, cfg.d_head, cfg.n_heads, cfg.d_mlp,
            cfg.n_layers) == (P + 1, P + 1, 3, D, 4, 4, 4 * D, 2)
    assert (cfg.act_fn, cfg.normalization_type, cfg.attention_dir, cfg.attn_only,
            cfg.positional_embedding_type) == ("gelu", None, "bidirectional", False, "standard")
    state = hooked.state_dict()
    for name in ["unembed.b_U"] + [f"blocks.{i}.attn.{b}" for i in (0, 1) for b in ("b_Q", "b_K", "b_V", "b_O")]:
        assert not state[name].any(), name
    np.testing.assert_array_equal(state["blocks.1.attn.W_O"].numpy().reshape(D, D), model.arrays["W_O"][1])
    np.testing.assert_array_equal(state["blocks.0.mlp.b_in"].numpy(), model.arrays["b_in"][0])

    tokens = model.all_pairs()
    acts = model.activations(tokens)
    hooked.reset_hooks()  # the attention rate's hooks are permanent: they stay
    with torch.no_grad():
        logits, cache = hooked.run_with_cache(torch.tensor(tokens))
    np.testing.assert_allclose(logits[:, -1].numpy(), model.logits(tokens), rtol=1e-5, atol=1e-5)
    shared = [name for name in acts if name in cache]
    assert len(shared) == len(acts) - 1  # every activation but the logits
    for name in shared:  # the pattern cached is the pattern after the rate
        np.testing.assert_allclose(cache[name].numpy(), acts[name], rtol=1e-5, atol=1e-5, err_msg=name)
    pattern = cache["blocks.1.attn.hook_pattern"].numpy()
    np.testing.assert_allclose(pattern.sum(-1), 0.3 + 0.7 * 3, rtol=1e-5)
