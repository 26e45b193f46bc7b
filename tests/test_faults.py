"""Bad inputs and faults met as a hostile user would: each gets one short line naming what is
wrong, and nothing already written is lost or overwritten."""
import json
import subprocess
import sys

import numpy as np

from phasescan import grid, results, weights
from phasescan.chunk import compile_chunk, run_chunk
from phasescan.sweep import run_sweep
from phasescan.train import Spec

from conftest import ROOT, TINY, compose, run_cli


def test_non_finite_values_and_repeated_axis_values_are_refused():
    proc = run_cli("train.lr=inf", "train.weight_decay=nan", "sweep.axes.attn_rate=[0.5,0.5]",
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.lr=inf: must be a finite number" in proc.stderr
    assert "train.weight_decay=nan: must be a finite number" in proc.stderr
    assert "sweep.axes.attn_rate: repeats 0.5" in proc.stderr
    assert "sweep.variants" not in proc.stderr  # no variants were given


def test_a_diverged_model_has_no_accuracy(tiny_cfg):
    cfg = compose(*TINY, "sweep.seeds=1", "sweep.axes.attn_rate=[1.0]", "sweep.axes.lr=[1e-3,1e6]")
    runs = grid.expand(cfg)
    out = run_chunk(compile_chunk(Spec.from_run(runs[0]), 2, cfg["metrics"]), runs, 2)
    assert list(out["diverged"]) == [False, True]
    for name in ("train_acc", "test_acc", "acc"):
        assert np.isfinite(out[name][0]) and np.isnan(out[name][1]), name


def test_no_test_set_labels_by_all_pairs_in_the_sweep_and_the_evaluator(tmp_path):
    """task.train_frac=1 leaves no test pair; the sweep and phasescan.evaluate judge
    generalisation on all pairs alike (before: every sweep row was `unlearned`)."""
    out = tmp_path / "all"
    frame = run_sweep(compose(*TINY, "task.train_frac=1.0", "train.steps=300", "save_weights=all"), out)
    assert frame["test_acc"].isna().all()
    assert list(frame["algorithm"] == "unlearned") == list(frame["acc"] < 0.9)
    assert (frame["acc"] >= 0.9).any()  # the check above is not vacuous
    row = frame.iloc[0]
    proc = subprocess.run([sys.executable, "-m", "phasescan.evaluate",
                           str(weights.path_of(out, row["run_id"])), "metrics.grad_sym_triples=50"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout)  # valid JSON: NaN printed as null
    assert said["test_acc"] is None and said["algorithm"] == row["algorithm"]


def test_a_second_process_on_the_same_out_dir_is_refused(tmp_path):
    out = tmp_path / "busy"
    with results.locked(out):
        proc = run_cli(*TINY, f"out_dir={out}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another phasescan is writing here (pid" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [results.LOCK]  # nothing written
    run_cli(*TINY, f"out_dir={out}")  # once the holder is gone, the folder is free
    assert (out / results.RUNS).is_file()


def test_inspecting_a_diverged_run_says_so_instead_of_crashing(tmp_path):
    out = tmp_path / "diverged"
    frame = run_sweep(compose(*TINY, "sweep.seeds=1", "sweep.axes.attn_rate=[1.0]",
                              "sweep.axes.lr=[1e-3,1e6]"), out)
    bad = frame.loc[frame["diverged"], "run_id"].iloc[0]
    proc = subprocess.run([sys.executable, "-m", "phasescan.plot", str(out), "--runs", bad],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"run {bad} diverged: no inspection figure" in proc.stderr
    assert not (out / "figures" / f"inspect_{bad}.png").exists()
