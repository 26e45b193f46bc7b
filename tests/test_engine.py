"""The engine: vmapped training equals one-by-one, grid expansion, schema, CLI, science."""
import jax
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose, run_cli

from phasescan import load
from phasescan.engine.chunk import compile_chunk, run_chunk
from phasescan.engine.train import Spec
from phasescan.core import grid
from phasescan.core.config import ConfigError
from phasescan.store.results import FIELD_COLUMNS, ID_COLUMNS, METRIC_COLUMNS


def test_vmapped_chunk_equals_models_trained_alone(tiny_cfg):
    runs = grid.expand(tiny_cfg | {"sweep": tiny_cfg["sweep"] | {
        "axes": {"attn_rate": [0.0, 0.3, 1.0], "lr": [1e-3, 3e-3]}}})
    spec = Spec.from_run(runs[0])
    together = run_chunk(compile_chunk(spec, len(runs), tiny_cfg["metrics"]), runs, len(runs))
    alone_fn = compile_chunk(spec, 1, tiny_cfg["metrics"])
    for i, run in enumerate(runs):
        alone = run_chunk(alone_fn, [run], 1)
        for name in ("train_loss", "test_loss", "grad_sym", "dist_irr", "circularity", "param_norm",
                     "circle_clock_fve", "circle_pizza_fve"):
            np.testing.assert_allclose(together[name][i], alone[name][0], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name} of run {i}")
        np.testing.assert_array_equal(together["circle_freq"][i], alone["circle_freq"][0])


@pytest.mark.parametrize("vmap_group", [1, 2])
def test_models_in_vmapped_groups_equal_the_whole_chunk_vmapped(tiny_cfg, vmap_group):
    """sweep.vmap_group only changes how a chunk is laid out on the device (groups in a lax.map
    loop, 3 models in groups of 2 leaving a remainder): the same models come out."""
    runs = grid.expand(tiny_cfg | {"sweep": tiny_cfg["sweep"] | {"axes": {"attn_rate": [0.0, 0.5, 1.0]}}})[:3]
    spec = Spec.from_run(runs[0])
    whole = run_chunk(compile_chunk(spec, 3, tiny_cfg["metrics"]), runs, 3)
    grouped = run_chunk(compile_chunk(spec, 3, tiny_cfg["metrics"], vmap_group=vmap_group), runs, 3)
    for name in ("train_loss", "test_loss", "grad_sym", "dist_irr", "circularity", "param_norm"):
        np.testing.assert_allclose(grouped[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_grid_counts_ids_and_order():
    cfg = compose("sweep=width_vs_attn", "sweep.seeds=3")
    runs = grid.expand(cfg)
    assert len(runs) == 5 * 11 * 3
    assert len({r["run_id"] for r in runs}) == len(runs)
    again = grid.expand(compose("sweep=width_vs_attn", "sweep.seeds=3"))
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in again]
    # the run_id depends on the hyperparameters, not on the grid around it
    small = grid.expand(compose("sweep=width_vs_attn", "sweep.seeds=1", "sweep.axes.d_model=[128]"))
    by_point = {(r["d_model"], r["attn_rate"], r["seed"]): r["run_id"] for r in runs}
    assert all(by_point[(r["d_model"], r["attn_rate"], r["seed"])] == r["run_id"] for r in small)
    assert [r["attn_rate"] for r in runs[:3 * 11:3]] == [round(0.1 * i, 12) for i in range(11)]
    assert len(grid.buckets(runs)) == 5


@pytest.mark.parametrize("spec, expected", [
    ("linspace(0,1,5)", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ({"linspace": [0, 1, 3]}, [0.0, 0.5, 1.0]),
    ("geomspace(32,512,5)", [32, 64, 128, 256, 512]),
    ("logspace(5,9,5,2)", [32, 64, 128, 256, 512]),
])
def test_axis_ranges(spec, expected):
    name = "d_model" if expected[-1] == 512 else "attn_rate"
    assert grid.axis_values(name, spec, 0) == expected


def test_random_axis_is_seeded_and_in_range():
    a = grid.axis_values("attn_rate", "uniform(0,1,50)", sample_seed=3)
    assert a == grid.axis_values("attn_rate", "uniform(0,1,50)", sample_seed=3)
    assert a != grid.axis_values("attn_rate", "uniform(0,1,50)", sample_seed=4)
    assert len(a) == 50 and all(0 <= v <= 1 for v in a)


def test_bad_axis_values_are_reported():
    with pytest.raises(ConfigError, match="d_model"):
        grid.axis_values("d_model", [32.5], 0)
    with pytest.raises(ConfigError, match="attn_rate"):
        grid.axis_values("attn_rate", "nonsense(1)", 0)


def test_cli_end_to_end_writes_documented_table(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*TINY, "task.p=13", "sweep.chunk_size=3", f"out_dir={out}")
    assert "models/s" in proc.stderr and "ETA" in proc.stderr
    frame = pd.read_parquet(out / "runs.parquet")
    for col in ID_COLUMNS + FIELD_COLUMNS + METRIC_COLUMNS:
        assert col in frame.columns, col
    assert len(frame) == 4 and set(frame["p"]) == {13} and set(frame["steps"]) == {60}
    assert set(frame["algorithm"]) <= {"clock", "pizza", "other", "non_circular", "unlearned", "diverged"}
    assert (out / "config.yaml").is_file() and (out / "manifest.json").is_file()
    pd.testing.assert_frame_equal(load(out), frame)


@pytest.mark.slow
def test_science_attention_rate_zero_is_more_symmetric(tmp_path):
    """p = 23, d = 64, 1500 steps: attention rate 0 learns Pizza (symmetric), 1 learns Clock."""
    out = tmp_path / "science"
    run_cli("task.p=23", "model.d_model=64", "train.steps=1500", "sweep.seeds=1",
            "sweep.axes.attn_rate=[0.0,1.0]", "plot=false", f"out_dir={out}")
    frame = load(out).set_index("attn_rate")
    assert (frame["test_acc"] > 0.95).all()
    assert frame.loc[0.0, "grad_sym"] > 0.95
    assert frame.loc[0.0, "grad_sym"] - frame.loc[1.0, "grad_sym"] > 0.3
    assert frame.loc[0.0, "algorithm"] == "pizza"
    assert frame.loc[1.0, "algorithm"] == "clock"


@pytest.mark.parametrize("p, train_frac, n_train", [(59, 0.8, 2784), (11, 0.5, 60), (2, 0.5, 2), (11, 1.0, 121)])
def test_split_is_a_partition_with_the_reference_sizes(p, train_frac, n_train):
    from phasescan.engine import data
    train_idx, test_idx = data.split(jax.random.key(3), p * p, train_frac)
    assert len(train_idx) == n_train and len(test_idx) == p * p - n_train
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(p * p))
    mask = np.asarray(data.train_mask(jax.random.key(3), p * p, train_frac))
    assert mask.sum() == n_train and np.all(mask[np.asarray(train_idx)] == 1)


def test_train_frac_splits_the_grid_into_buckets(tiny_cfg):
    """The number of train pairs is a shape: one bucket (one compiled program) per train
    fraction."""
    cfg = tiny_cfg | {"sweep": tiny_cfg["sweep"] | {"axes": {"train_frac": [0.5, 0.8]}}}
    runs = grid.expand(cfg)
    buckets = grid.buckets(runs)
    assert len(buckets) == 2
    assert sorted(Spec.from_run(b[0]).train_frac for b in buckets.values()) == [0.5, 0.8]
