"""The benchmark tools and train.precision: behaviour only (no timed assertions)."""
import jax
import numpy as np
import pandas as pd
import pytest

from phasescan import grid, train
from phasescan.config import ConfigError

from bench import throughput
from conftest import TINY, compose, run_cli


def xla_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_flop_count_agrees_with_xla_cost_analysis(n_layers):
    cfg = compose("task.p=11", "model.d_model=16", f"model.n_layers={n_layers}", "metrics.grad_sym_triples=50")
    run = grid.expand(cfg)[0]
    spec = train.Spec.from_run(run)
    fns = throughput.sequential_programs(spec, cfg["metrics"])
    key, hp = throughput.one_model(run)
    params, opt_state, mask = jax.jit(fns["init"])(key, hp)
    step = jax.jit(fns["step"]).lower(params, opt_state, hp, mask).compile()
    counted = throughput.flops_per_step(spec)["step"]
    # XLA also counts the elementwise work (softmax, AdamW), which the shape count leaves out.
    assert counted <= xla_flops(step) <= 1.15 * counted


def test_sequential_baseline_is_the_engines_computation():
    out = throughput.main(["--p", "11", "--d-model", "16", "--steps", "20", "--models", "3",
                           "--grad-sym-triples", "50", "--peak-n", "64"])
    engine, sequential = out["engine"], out["sequential"]
    assert len(engine["train_loss"]) == len(sequential["train_loss"]) == 3
    for name in ("train_loss", "grad_sym", "dist_irr"):
        np.testing.assert_allclose(sequential[name], engine[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert out["peak"]["flops"] > 0 and out["ratio"] > 0


def test_bad_precision_is_a_short_error_naming_the_allowed_values():
    with pytest.raises(ConfigError, match="train.precision='fp16': must be one of float32, tf32, bfloat16"):
        grid.expand(compose(*TINY, "train.precision=fp16"))


def test_precisions_train_the_same_models_and_fill_the_compile_cache(tmp_path):
    cache = tmp_path / "cache"
    run_cli(*TINY, "sweep.seeds=1", "sweep.axes.precision=[float32,tf32,bfloat16]",
            f"out_dir={tmp_path / 'out'}", f"compile_cache={cache}")
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert sorted(runs["precision"].unique()) == ["bfloat16", "float32", "tf32"]
    by = runs.set_index(["precision", "attn_rate"])["train_loss"]
    for attn in runs["attn_rate"].unique():
        # bf16 rounds every activation (8-bit mantissa): close to float32, not equal to it
        assert np.isfinite(by["bfloat16", attn])
        assert abs(by["bfloat16", attn] - by["float32", attn]) < 0.05 * by["float32", attn]
        if jax.default_backend() == "cpu":  # no TF32 on a CPU: the default matmul is float32
            assert by["tf32", attn] == by["float32", attn]
    assert any(cache.iterdir()), "the persistent compilation cache wrote nothing"
