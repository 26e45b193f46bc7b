"""Sweeps that survive: kill and resume, no half-written files, no mixing of out_dirs, diverging
models contained, out-of-memory chunks split, the same table whatever the chunking, and every
bad input reported at once before anything is written (docs/reliability.md)."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, run_cli

from phasescan import load, overrides
from phasescan.engine.train import Spec
from phasescan.runner import sweep
from phasescan.core import grid
from phasescan.core.classify import classify
from phasescan.core.config import ConfigError, compose
from phasescan.store import results

# Two buckets (steps is shape-changing) of 4 models: enough for chunks, resumes and bucket order.
BASE = ["task.p=11", "model.d_model=16", "sweep.seeds=2", "sweep.axes.attn_rate=[0.0,1.0]",
        "sweep.axes.steps=[30,60]", "plot=false", "metrics.grad_sym_triples=50"]
NUMERIC = ["train_loss", "test_loss", "loss", "train_acc", "test_acc", "acc", "grad_sym",
           "dist_irr", "circularity", "clock_fve", "pizza_fve", "param_norm"]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A persistent compilation cache shared by this module's runs and subprocesses: the same
    programs are compiled once. Speed only: a cached program is the same compiled program."""
    from jax.experimental.compilation_cache import compilation_cache

    cache = str(tmp_path_factory.mktemp("jax_cache"))
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    yield {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_env):
    """The uninterrupted sweep, one model per chunk."""
    return sweep.run_sweep(compose(*BASE, "sweep.chunk_size=1"),
                           tmp_path_factory.mktemp("reference") / "out")


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame, exact: bool = True):
    """Same runs in the same order with the same metrics: bit for bit, or to float32 rounding."""
    assert list(got["run_id"]) == list(want["run_id"]) and got["run_id"].is_unique
    for col in NUMERIC:
        if exact:
            np.testing.assert_array_equal(got[col], want[col], err_msg=col)
        else:
            np.testing.assert_allclose(got[col], want[col], rtol=2e-5, atol=1e-6, err_msg=col)
    for col in ("algorithm", "diverged", "n_key_freqs"):
        assert list(got[col]) == list(want[col]), col
    assert [list(k) for k in got["key_freqs"]] == [list(k) for k in want["key_freqs"]]


def snapshot(folder):
    """Every file under folder: its bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- resume after a crash -------------------------------------------------------------------

def test_kill_and_resume_matches_uninterrupted_run(tmp_path, reference, cache_env, capsys):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "phasescan", *BASE, "sweep.chunk_size=1", f"out_dir={out}"]
    env = {**os.environ, **cache_env}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline \
                and not list((out / results.CHUNKS).glob("chunk-*.parquet")):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]

    # Whatever a reader sees is whole: every non-hidden file parses; unfinished ones are hidden.
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix == ".parquet":
                pd.read_parquet(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        if path.is_file() and results.is_temporary(path):
            assert path.name.startswith(".")
    assert not (out / results.RUNS).exists()
    partial = load(out)
    assert 1 <= len(partial) < 8 and partial["run_id"].is_unique
    assert f"{len(partial)} of 8 runs done" in capsys.readouterr().err
    finished = snapshot(out / results.CHUNKS)

    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(partial)} of 8 runs already done" in proc.stderr
    after = snapshot(out / results.CHUNKS)
    assert all(after[name] == finished[name] for name in finished)  # not retrained, not rewritten
    assert json.loads((out / results.MANIFEST).read_text())["resumes"] == 1
    assert_same_table(pd.read_parquet(out / results.RUNS), reference)


def test_resume_of_a_finished_sweep_trains_nothing(tmp_path, cache_env, monkeypatch):
    cfg = compose(*BASE, "sweep.chunk_size=1", "sweep.axes.steps=[30]")
    first = sweep.run_sweep(cfg, tmp_path / "out")
    monkeypatch.setattr(sweep, "compile_chunk", lambda *a: pytest.fail("compiled again"))
    again = sweep.run_sweep(cfg, tmp_path / "out")
    assert_same_table(again, first)
    assert json.loads((tmp_path / "out" / results.MANIFEST).read_text())["resumes"] == 1


# --- determinism ----------------------------------------------------------------------------

def test_same_table_whatever_bucket_order(tmp_path, reference, monkeypatch):
    order = []
    real_buckets = grid.buckets

    def reversed_buckets(runs):
        groups = dict(reversed(real_buckets(runs).items()))
        order.extend(groups)
        return groups

    monkeypatch.setattr(grid, "buckets", reversed_buckets)
    frame = sweep.run_sweep(compose(*BASE, "sweep.chunk_size=1"), tmp_path / "out")
    assert order == list(reversed(real_buckets(frame.to_dict("records"))))
    assert_same_table(frame, reference)


def test_same_table_whatever_chunk_size(tmp_path, reference):
    frame = sweep.run_sweep(compose(*BASE, "sweep.chunk_size=2", "sweep.axes.steps=[60]"),
                            tmp_path / "out")
    # Programs of 2 models instead of 1: XLA may round differently in the last bits, no more.
    want = reference[reference["steps"] == 60].reset_index(drop=True)
    assert_same_table(frame, want, exact=False)


# --- no mixing ------------------------------------------------------------------------------

def foreign_folder(path, overrides_=("task.p=13",)):
    """A results folder of another sweep (TINY at another p), with a chunk in it."""
    other = compose(*TINY, *overrides_)
    identity = sweep.sweep_identity(sweep.validated_runs(other), other)
    sweep.prepare_out_dir(path, yaml.safe_dump(other), identity)
    (path / results.CHUNKS).mkdir()
    (path / results.CHUNKS / "chunk-0000.parquet").write_bytes(b"the other sweep's rows")
    return path


def test_foreign_out_dir_is_refused_and_left_untouched(tmp_path):
    cfg = compose(*TINY)
    taken = foreign_folder(tmp_path / "taken")
    not_results = tmp_path / "mine"
    not_results.mkdir()
    (not_results / "notes.txt").write_text("my notes")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    before = {p: snapshot(p) for p in (taken, not_results)}
    for out_dir, says in [(taken, "different sweep configuration"), (not_results, "not phasescan"),
                          (a_file, "not a folder")]:
        with pytest.raises(ConfigError, match="out_dir_taken=sibling") as error:
            sweep.run_sweep(cfg, out_dir)
        assert says in str(error.value) and str(out_dir) in str(error.value)
    assert {p: snapshot(p) for p in (taken, not_results)} == before
    assert a_file.read_text() == "x" and sorted(tmp_path.iterdir()) == [a_file, not_results, taken]


def test_out_dir_taken_sibling_picks_a_fresh_folder_and_resumes_there(tmp_path):
    cfg = compose(*TINY, "out_dir_taken=sibling")
    taken = foreign_folder(tmp_path / "res")
    assert sweep.choose_out_dir(cfg, taken) == tmp_path / "res-2"
    identity = sweep.sweep_identity(sweep.validated_runs(cfg), cfg)
    sweep.prepare_out_dir(tmp_path / "res-2", "", identity)  # a started, interrupted run
    assert sweep.choose_out_dir(cfg, taken) == tmp_path / "res-2"  # the same command resumes it
    assert sweep.choose_out_dir(compose(*TINY, "out_dir_taken=sibling", "task.p=12"), taken) \
        == tmp_path / "res-3"


def test_cli_refuses_foreign_out_dir_briefly(tmp_path):
    taken = foreign_folder(tmp_path / "taken")
    before = snapshot(taken)
    proc = run_cli(*TINY, f"out_dir={taken}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds results of a different sweep configuration (differs in task.p: 13 -> 11)" in proc.stderr
    assert "out_dir_taken=sibling" in proc.stderr and len(proc.stderr.splitlines()) <= 3
    assert snapshot(taken) == before


# --- divergence -----------------------------------------------------------------------------

def test_diverging_model_is_labelled_and_contained(cache_env):
    cfg = compose(*TINY, "sweep.seeds=1", "sweep.axes.attn_rate=[1.0]", "sweep.axes.lr=[1e-3,1e6,3e-3]")
    sane, blowup, other = sweep.validated_runs(cfg)
    program = sweep.compile_chunk(Spec.from_run(sane), 2, cfg["metrics"])
    mixed = sweep.run_chunk(program, [sane, blowup], 2)
    clean = sweep.run_chunk(program, [sane, other], 2)
    alone = sweep.run_chunk(program, [sane], 2)  # padded with copies of itself
    # lr = 1e6: decoupled weight decay multiplies the weights by (1 - lr * wd) each step
    assert not (np.isfinite(mixed["train_loss"][1]) and np.isfinite(mixed["param_norm"][1]))
    assert list(mixed["diverged"]) == [False, True]
    assert list(classify(mixed, cfg["classify"]))[1] == "diverged"
    assert classify(mixed, cfg["classify"])[0] != "diverged"
    for name in NUMERIC:  # its neighbour's numbers are exactly those it has without it
        assert np.isfinite(mixed[name][0]), name
        assert mixed[name][0] == clean[name][0] == alone[name][0], name


# --- out of memory --------------------------------------------------------------------------

class FailingProgram:
    """Stands in for a compiled chunk program that fails with `message` when it starts."""
    models = None  # run_chunk places its inputs with this sharding: the default device
    segment = 1

    def __init__(self, message: str):
        self.message = message

    def init(self, *args):
        raise jax.errors.JaxRuntimeError(self.message)


def out_of_memory(size):
    return FailingProgram(f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate {size << 30} bytes.")


def test_out_of_memory_chunk_is_split_and_retried(tmp_path, reference, monkeypatch, caplog):
    real_compile = sweep.compile_chunk
    monkeypatch.setattr(sweep, "compile_chunk", lambda spec, size, opts, devices=None, **kw:
                        out_of_memory(size) if size > 1 else real_compile(spec, size, opts, devices, **kw))
    frame = sweep.run_sweep(compose(*BASE, "sweep.chunk_size=4"), tmp_path / "out")
    assert "out of device memory with 4 models per program: retrying with 2" in caplog.text
    assert "out of device memory with 2 models per program: retrying with 1" in caplog.text
    # Split down to one model per program: the reference's programs, so the same bits.
    assert_same_table(frame, reference)
    assert len(list((tmp_path / "out" / results.CHUNKS).glob("chunk-*.parquet"))) == 8


def test_other_errors_and_one_model_out_of_memory_are_not_retried():
    runs = sweep.validated_runs(compose(*TINY))

    def failing(message):
        return lambda size: FailingProgram(message)

    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        list(sweep.run_pieces(failing("INTERNAL: a real bug"), runs, 4, keep_params=False))
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        list(sweep.run_pieces(failing("RESOURCE_EXHAUSTED: out of memory"), runs, 4, keep_params=False))


# --- validation before anything is written ------------------------------------------------------

@pytest.mark.parametrize("override, says", [
    ("model.attn_rate=1.5", "model.attn_rate=1.5: must lie in [0, 1]"),
    ("sweep.axes.attn_rate=[0,-0.5]", "sweep.axes.attn_rate[1]=-0.5: must lie in [0, 1]"),
    ("model.n_heads=3", "model.d_model=16: must be divisible by model.n_heads=3"),
    ("task.p=1", "task.p=1: must be >= 8"),
    ("task.train_frac=0", "task.train_frac=0.0: must lie in (0, 1]"),
    ("task.train_frac=1.5", "task.train_frac=1.5: must lie in (0, 1]"),
    ("train.steps=0", "train.steps=0: must be > 0"),
    ("train.lr=-0.001", "train.lr=-0.001: must be > 0"),
    ("train.batch_size=0", "train.batch_size=0: must be > 0"),
    ("train.batch_size=97", "train.batch_size=97: must be <= the 96 train pairs"),
    ("train.weight_decay=-1", "train.weight_decay=-1.0: must be >= 0"),
    ("sweep.seeds=0", "sweep.seeds=0: must be a positive integer"),
    ("sweep.seeds=1.5", "sweep.seeds=1.5: must be a positive integer"),
    ("sweep.axes.d_model=[16,big]", "sweep.axes.d_model[1]='big': expected an integer"),
    ("sweep.axes.act=[relu,tanh]", "sweep.axes.act[1]='tanh': must be one of relu, gelu"),
    ("sweep.chunk_size=0", "sweep.chunk_size=0: must be auto or a positive integer"),
    ("sweep.chunk_size=lots", "sweep.chunk_size='lots': must be auto or a positive integer"),
    ("sweep.vmap_group=0", "sweep.vmap_group=0: must be null (all of a device's models side by side) or a positive integer"),
    ("classify.min_test_acc=1.5", "classify.min_test_acc=1.5: must be a number in [0, 1]"),
    ("classify.pizza_min_grad_sym=high", "classify.pizza_min_grad_sym='high': must be a number"),
    ("metrics.grad_sym_triples=0", "metrics.grad_sym_triples=0: must be a positive integer or \"all\""),
    ("out_dir_taken=overwrite", "out_dir_taken='overwrite': must be refuse"),
])
def test_each_bad_input_names_key_value_and_allowed(override, says, tmp_path):
    with pytest.raises(ConfigError) as error:
        sweep.run_sweep(compose(*TINY, override), tmp_path / "out")
    assert error.value.problems == [next(p for p in error.value.problems if says in p)]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, says", [
    ("sweep=nope", "sweep=nope: unknown sweep (allowed: cpu_delay_p59, cpu_fixed_width_p59, cpu_learning_phases,"),
    ("sweep.axes.foo=[1]", "sweep.axes.foo=[1]: unknown axis (allowed: p, train_frac,"),
    ("model.dmodel=32", "model.dmodel=32: unknown key in model (allowed: kind, d_model,"),
    ("classify.min_acc=0.5", "classify.min_acc=0.5: unknown key in classify (allowed: min_test_acc,"),
    ("outdir=x", "outdir=x: unknown key (allowed: out_dir,"),
])
def test_unknown_names_are_reported_with_the_allowed_ones(override, says):
    args, problems = overrides.check(TINY + [override])
    assert len(problems) == 1 and problems[0].startswith(says)
    assert args == TINY  # the rest goes to Hydra unchanged


def test_cli_reports_every_bad_input_at_once_without_traceback(tmp_path):
    out = tmp_path / "out"
    bad = {"model.attn_rate=2": "model.attn_rate", "model.n_heads=5": "divisible by model.n_heads=5",
           "task.p=1": "task.p", "task.train_frac=0": "task.train_frac", "train.steps=0": "train.steps",
           "train.lr=0": "train.lr", "train.batch_size=-2": "train.batch_size",
           "train.weight_decay=-1": "train.weight_decay", "sweep.seeds=0": "sweep.seeds",
           "sweep=nope": "unknown sweep", "sweep.axes.foo=[1]": "unknown axis",
           "sweep.axes.lr=[0.1,fast]": "sweep.axes.lr[1]", "sweep.chunk_size=0": "sweep.chunk_size",
           "classify.min_test_acc=2": "classify.min_test_acc"}
    proc = run_cli("model.d_model=16", *bad, f"out_dir={out}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "phasescan: configuration errors:" and len(lines) == 1 + len(bad), proc.stderr
    for says in bad.values():
        assert says in proc.stderr, says
    assert not out.exists()


def test_range_axes_work_unquoted_on_the_command_line():
    args, problems = overrides.check(["sweep.axes.attn_rate=linspace(0,1,3)"])
    assert problems == [] and grid.swept_axes(compose(*args))["attn_rate"] == [0.0, 0.5, 1.0]


# --- files --------------------------------------------------------------------------------------

def test_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="no phasescan results"):
        load(tmp_path)
    sweep.prepare_out_dir(tmp_path / "started", "", "some-identity")
    results.write_manifest(tmp_path / "started", {"n_runs": 4})
    with pytest.raises(FileNotFoundError, match="0 of 4 runs done"):
        load(tmp_path / "started")


def test_a_damaged_chunk_counts_as_not_done(tmp_path, capsys):
    good = pd.DataFrame({"run_id": ["a", "b"], "run_index": [1, 0], "seed": [0, 1],
                         "data_seed": [0, 1], "algorithm": ["pizza", "clock"], "x": [1.0, 2.0]})
    results.write_chunk(tmp_path, good)
    (tmp_path / results.CHUNKS / "chunk-damaged.parquet").write_bytes(b"PAR1 cut off")
    # what a kill in the middle of write_atomic leaves: hidden, never read
    (tmp_path / results.CHUNKS / ".chunk-cafe.parquet.tmp-4242").write_bytes(b"PAR1 half")
    frame = results.read_chunks(tmp_path)
    assert list(frame["run_id"]) == ["b", "a"]
    err = capsys.readouterr().err
    assert "chunk-damaged.parquet: unreadable" in err and "tmp-4242" not in err


def test_write_atomic_leaves_nothing_when_writing_fails(tmp_path):
    def half_then_crash(tmp):
        tmp.write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        results.write_atomic(tmp_path / "runs.parquet", half_then_crash)
    assert list(tmp_path.iterdir()) == []


def test_deterministic_flag_is_added_once_and_checked(monkeypatch):
    from phasescan.engine import determinism
    from phasescan.core.config import check_options, compose

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    determinism.enable(True)
    determinism.enable(True)
    assert os.environ["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", determinism.FLAG]
    monkeypatch.delenv("XLA_FLAGS")
    determinism.enable(False)
    assert "XLA_FLAGS" not in os.environ
    problems = check_options(compose("deterministic=maybe"))
    assert problems == ["deterministic='maybe': must be true or false"]
