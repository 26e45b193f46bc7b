"""Bad inputs and faults met as a hostile user would: each gets one short line naming what is
wrong, and nothing already written is lost or overwritten."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose, run_cli

from phasescan.engine.chunk import compile_chunk, run_chunk
from phasescan.engine.train import Spec
from phasescan.runner.sweep import run_sweep
from phasescan.spec import grid
from phasescan.store import results, weights


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


def test_stray_files_in_chunks_are_skipped_and_named(tmp_path):
    """A zero-byte chunk, a foreign parquet and another sweep's chunk copied in: the table keeps
    only this sweep's runs, each once, and says which files it skipped."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    first = run_sweep(compose(*TINY), ours)
    run_sweep(compose(*TINY, "task.p=13"), theirs)
    chunks = ours / results.CHUNKS
    (chunks / "chunk-empty.parquet").write_bytes(b"")
    pd.DataFrame({"x": [1, 2]}).to_parquet(chunks / "chunk-foreign.parquet")
    for f in (theirs / results.CHUNKS).glob("chunk-*.parquet"):
        (chunks / f.name).write_bytes(f.read_bytes())
    proc = run_cli(*TINY, f"out_dir={ours}")  # resumes: nothing to train, assembles again
    table = pd.read_parquet(ours / results.RUNS)
    assert sorted(table["run_id"]) == sorted(first["run_id"]) and table["run_id"].is_unique
    assert "chunk-empty.parquet: unreadable, skipped" in proc.stderr
    assert "chunk-foreign.parquet: skipped, not a phasescan chunk" in proc.stderr
    assert "skipped, runs of another sweep" in proc.stderr


def test_load_falls_back_to_the_chunks_when_runs_parquet_is_damaged(tmp_path, capsys):
    from phasescan import load
    out = tmp_path / "out"
    first = run_sweep(compose(*TINY), out)
    (out / results.RUNS).write_bytes(b"not parquet")
    frame = load(out)
    assert sorted(frame["run_id"]) == sorted(first["run_id"])
    assert "unreadable" in capsys.readouterr().err


def test_a_model_too_large_for_the_device_is_refused_before_anything_is_written(tmp_path):
    proc = run_cli("task.p=2000", f"out_dir={tmp_path / 'huge'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "task.p=2000, model.d_model=64: one model needs about" in proc.stderr
    assert not (tmp_path / "huge").exists()


@pytest.mark.parametrize("content, says", [
    (b"", "not a readable .npz file"), (b"hello", "not a readable .npz file"),
    ("npy", "a single array (.npy)"), ("object", "holds object arrays (refused)")])
def test_evaluate_refuses_what_is_not_a_weights_file(tmp_path, content, says):
    path = tmp_path / "w.npz"
    if content == "npy":
        np.save(tmp_path / "w.npy", np.zeros(3))
        path = tmp_path / "w.npy"
    elif content == "object":
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    else:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "phasescan.evaluate", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and says in proc.stderr
    assert "Traceback" not in proc.stderr and "allow_pickle" not in proc.stderr


def test_evaluate_checks_every_key_shape_and_override(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, p=np.float64(13.7), act=np.str_("tanh"), attn_rate=np.float32(5),
             op=np.str_("div"), train_frac=np.float32(2), bogus=np.zeros(2))
    proc = subprocess.run([sys.executable, "-m", "phasescan.evaluate", str(path),
                           "metrics.grad_sym_triples=-1", "classify.min_test_acc=5", "foo=1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for says in ("p=13.7: expected an integer", "act='tanh': must be one of relu, gelu",
                 "attn_rate=5.0: must lie in [0, 1]", "op='div': must be one of",
                 "train_frac=2.0: must lie in (0, 1]", "bogus: unknown array",
                 "metrics.grad_sym_triples=-1", "classify.min_test_acc=5", "foo=1: unknown key"):
        assert says in proc.stderr, says
    # shapes against each other, before anything is allocated: p = 100000 with 13 rows
    np.savez(path, p=np.int64(100000), act=np.str_("relu"), attn_rate=np.float32(1.0),
             embed=np.zeros((13, 16), np.float32))
    proc = subprocess.run([sys.executable, "-m", "phasescan.evaluate", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "embed: axis 0 (vocab) is 13, expected 100000" in proc.stderr


def test_an_out_dir_that_cannot_be_written_is_one_line(tmp_path):
    proc = run_cli(*TINY, "out_dir=/proc/phasescan-cannot-be-here", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "out_dir=/proc/phasescan-cannot-be-here: cannot write there" in proc.stderr


def test_plot_on_a_damaged_folder_is_one_line(tmp_path):
    (tmp_path / results.RUNS).write_bytes(b"damaged")
    proc = subprocess.run([sys.executable, "-m", "phasescan.plot", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # the note on runs.parquet, and why


def test_sigterm_during_start_up_is_one_line(tmp_path):
    """A stop early on (composing, compiling or training: each answers alike): one line, no
    traceback, exit 130, the command that resumes."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "phasescan", *TINY, "train.steps=200000",
                             f"out_dir={tmp_path / 'out'}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # past the imports (the handler is installed first thing after them)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "interrupted" in err and "python -m phasescan" in err
