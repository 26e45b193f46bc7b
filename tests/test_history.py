"""Time-resolved phases: metrics every train.log_every steps, history.parquet."""
import numpy as np
import pandas as pd
from conftest import TINY, run_cli

from phasescan.engine.chunk import compile_chunk, run_chunk, split_history
from phasescan.engine.train import Spec
from phasescan.core import grid
from phasescan.store import history

SCALARS = ("train_loss", "test_loss", "train_acc", "test_acc", "grad_sym", "dist_irr",
           "circularity", "clock_fve", "pizza_fve", "param_norm")


def test_logging_leaves_the_trained_models_unchanged(tiny_cfg):
    runs = grid.expand(tiny_cfg)
    spec = Spec.from_run(runs[0])
    plain = run_chunk(compile_chunk(spec, len(runs), tiny_cfg["metrics"]), runs, len(runs))
    logged_spec = Spec.from_run(runs[0] | {"log_every": 20})
    with_log = run_chunk(compile_chunk(logged_spec, len(runs), tiny_cfg["metrics"]), runs, len(runs))
    final, logged = split_history(with_log)
    assert split_history(plain)[1] == {}
    for name in SCALARS:
        np.testing.assert_allclose(final[name], plain[name], rtol=1e-6, atol=1e-7, err_msg=name)
        assert logged[name].shape == (len(runs), 60 // 20 + 1)  # steps 0, 20, 40, 60
        np.testing.assert_array_equal(logged[name][:, -1], final[name])
    # training moves the models: the first logged loss is the untrained model's
    assert (logged["train_loss"][:, 0] > logged["train_loss"][:, -1]).all()


def test_log_every_is_not_part_of_the_run_id(tiny_cfg):
    plain = grid.expand(tiny_cfg)
    logged = grid.expand(tiny_cfg | {"train": tiny_cfg["train"] | {"log_every": 20}})
    assert [r["run_id"] for r in plain] == [r["run_id"] for r in logged]


def test_cli_writes_history_matching_the_final_rows(tmp_path):
    out = tmp_path / "run"
    run_cli(*TINY, "train.log_every=20", "sweep.chunk_size=3", f"out_dir={out}")
    runs = pd.read_parquet(out / "runs.parquet")
    hist = pd.read_parquet(out / "history.parquet")
    assert list(hist.columns[:2]) == ["run_id", "step"]
    assert len(hist) == len(runs) * 4 and sorted(hist["step"].unique()) == [0, 20, 40, 60]
    last = hist[hist["step"] == 60].set_index("run_id").loc[runs["run_id"]]
    for name in SCALARS:
        np.testing.assert_array_equal(last[name].to_numpy(), runs[name].to_numpy(), err_msg=name)
    assert (last["algorithm"].to_numpy() == runs["algorithm"].to_numpy()).all()
    assert set(hist["algorithm"]) <= {"clock", "pizza", "other", "non_circular", "unlearned", "diverged"}
    assert (hist[hist["step"] == 0]["algorithm"] == "unlearned").all()
    joined = history.load(out)
    assert {"attn_rate", "d_model", "seed"} <= set(joined.columns) and len(joined) == len(hist)


def test_log_every_must_divide_steps(tmp_path):
    proc = run_cli(*TINY, "train.log_every=7", f"out_dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2
    assert "train.log_every=7: must divide train.steps=60" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad").exists()
