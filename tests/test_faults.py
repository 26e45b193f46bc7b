"""Bad inputs and faults met as a hostile user would: each gets one short line naming what is
wrong, and nothing already written is lost or overwritten."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose, run_cli

from phasescan.engine.chunk import compile_chunk, run_chunk
from phasescan.engine.train import Spec
from phasescan.runner.sweep import run_sweep
from phasescan.core import grid
from phasescan.core.config import ConfigError
from phasescan.store import checkpoint, results, weights


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


def test_evaluate_runs_names_what_is_wrong_before_it_trains(tmp_path, capsys):
    from phasescan import evaluate
    folder = ROOT / "results" / "cpu" / "width_vs_attn"
    for args, says in (([str(tmp_path), "--runs", "abc"], "--runs needs one results folder (holding runs.parquet)"),
                       ([str(folder), "--runs", "zzz"], f"--runs zzz: no such run_id in {folder}"),
                       ([str(folder), "--runs", "0"], f"--runs 0: ambiguous in {folder} ("),
                       ([str(folder), "--runs", "0765303a5537", "--table", "x.txt"], "must end in .parquet or .csv")):
        assert evaluate.main(args) == 2  # in process: the exit status main returns, its stderr
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and "training" not in err, err
        assert not list(tmp_path.iterdir())


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


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
@pytest.mark.parametrize("delay", [0.0, 0.3, 3.0])
def test_sigterm_during_start_up_is_one_line(tmp_path, delay):
    """A stop early on (importing, composing, compiling or training: each answers alike): one
    line, no traceback, exit 130, the command that resumes. Sent right after the handler is
    installed it lands in the imports, where a raised KeyboardInterrupt once crashed the process
    (in an extension module's loading) or was swallowed (JAX's gc callback: it trained on)."""
    proc = subprocess.Popen([sys.executable, "-m", "phasescan", *TINY, "train.steps=200000",
                             f"out_dir={tmp_path / 'out'}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "interrupted" in err and "python -m phasescan" in err


# --- issue 30: wrong labels, tracebacks instead of one line ----------------------------------------

@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """A finished tiny sweep that kept its weights (copied by each test that damages it)."""
    out = tmp_path_factory.mktemp("kept") / "sweep"
    frame = run_sweep(compose(*TINY, "save_weights=all"), out)
    return out, frame


def copy_of(folder, tmp_path):
    import shutil
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def refused(*overrides) -> list[str]:
    """The problems make_plan reports for TINY with these overrides (none: a plan)."""
    from phasescan.runner.sweep import make_plan
    from phasescan.core.config import ConfigError
    try:
        make_plan(compose(*TINY, *overrides))
    except ConfigError as error:
        assert all("\n" not in p for p in error.problems)
        return error.problems
    return []


def test_a_modulus_or_split_whose_metrics_mean_nothing_is_refused(tmp_path):
    """p = 2, 3 trained one step were labelled Clock (a test set of one pair, every embedding a
    circle); circularity needs more Fourier frequencies than its 4 principal components."""
    with pytest.raises(ConfigError) as error:
        run_sweep(compose("sweep=demo", "sweep.axes.p=[2,3]", "sweep.axes.d_model=[4]",
                          "sweep.axes.attn_rate=[0.0,1.0]", "train.steps=1", "sweep.seeds=1",
                          "plot=false"), tmp_path / "out")
    assert error.value.problems[0].startswith("sweep.axes.p[0]=2: must be >= 8: with fewer than 4 "
                                              "Fourier frequencies")
    assert not (tmp_path / "out").exists()
    assert refused("task.p=7")[0].startswith("task.p=7: must be >= 8")
    assert refused("task.p=8") == []
    # a handful of test pairs: test_acc means nothing; no test set at all is fine (acc labels)
    assert refused("task.train_frac=0.95") == [
        "task.train_frac=0.95: leaves 7 test pairs at task.p=11; test_acc needs >= 10 (train_frac "
        "<= 0.9173, or 1.0: no test set, accuracy over all pairs labels the model)"]
    assert refused("task.train_frac=0.9173") == refused("task.train_frac=1.0") == []


def test_the_evaluator_refuses_a_split_the_sweep_refuses(kept, tmp_path, capsys):
    """A file whose train_frac leaves no train pair was measured and called `diverged`."""
    from phasescan import evaluate
    out, frame = kept
    arrays = weights.load(weights.path_of(out, frame["run_id"].iloc[0]))
    for key, value, says in [
            ("train_frac", 0.0001, "train_frac=0.0001: leaves no train pair at p=11"),
            ("train_frac", 0.99, "train_frac=0.99: leaves 2 test pairs at p=11"),
            ("p", 5, "p=5: must be >= 8"),
            ("data_seed", 2**32, "data_seed=4294967296: must lie in 0..4294967295")]:
        path = tmp_path / f"{key}.npz"
        np.savez(path, **arrays | {key: np.asarray(value)})
        assert evaluate.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_seeds_beyond_32_bits_are_refused_at_validation():
    assert refused("sweep.seed_start=4294967296", "task.split_seed=4294967296") == [
        "task.split_seed=4294967296: must lie in 0..4294967295 (a 32-bit JAX random seed)",
        "sweep.seed_start=4294967296: the seeds 4294967296..4294967297 must lie in 0..4294967295 "
        "(32-bit JAX random seeds; sweep.seeds=2)"]
    assert refused(f"sweep.seed_start={2**32 - 2}", f"task.split_seed={2**32 - 1}") == []


def test_an_unusable_compile_cache_is_refused_before_anything_is_created(tmp_path, monkeypatch):
    import phasescan
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        phasescan.run([*TINY, "compile_cache=true", "train.lr=-1"], out_dir=tmp_path / "out")
    assert error.value.problems == [
        "train.lr=-1.0: must be > 0",
        "compile_cache=True: must be a folder path (default ~/.cache/phasescan/jax) or null / false "
        "(no persistent cache)"]
    assert list(tmp_path.iterdir()) == []  # no ./True, no out_dir
    with pytest.raises(ConfigError, match=r"^compile_cache=/dev/null/x: cannot be created: /dev/null "
                                          r"is a file, not a folder; choose another folder, or "
                                          r"compile_cache=null"):
        phasescan.run([*TINY, "compile_cache=/dev/null/x"], out_dir=tmp_path / "out")
    (tmp_path / "file").write_text("")
    assert refused(f"compile_cache={tmp_path / 'file'}") == [
        f"compile_cache={tmp_path / 'file'}: is a file, not a folder; choose another folder, or "
        "compile_cache=null (no persistent cache)"]
    assert refused(f"compile_cache={tmp_path / 'new' / 'cache'}") == []
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


DAMAGED_CONFIGS = {"sweep: {a: [": "not valid YAML (expected the node content",
                   "- 1": "holds list [1], not a config",
                   "x: ${oc.env:NOPE}": "x: InterpolationResolutionError",
                   "classify: 5": "classify=5: expected a mapping"}
DAMAGED_MANIFESTS = {'{"sweep_identity": "ab': "unreadable (JSONDecodeError",
                     "[]": "holds list [], not a manifest", '"x"': "holds str 'x', not a manifest"}


@pytest.mark.parametrize("text, says", DAMAGED_CONFIGS.items())
def test_a_damaged_config_yaml_is_one_line_in_report_plot_and_the_reader(kept, tmp_path, capsys,
                                                                         text, says):
    from phasescan import plot, report
    folder = copy_of(kept[0], tmp_path)
    (folder / results.CONFIG).write_text(text + "\n")
    with pytest.raises(ConfigError, match=f"^{folder / results.CONFIG}: "):
        results.read_config(folder)
    for command in (report.main, plot.main):
        assert command([str(folder)] + (["--no-inspect"] if command is plot.main else [])) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text, says", DAMAGED_MANIFESTS.items())
def test_a_damaged_manifest_is_one_line_in_load_and_the_sweep(kept, tmp_path, text, says):
    import phasescan
    folder = copy_of(kept[0], tmp_path)
    (folder / results.MANIFEST).write_text(text)
    (folder / results.RUNS).unlink()  # load reads the manifest for an unfinished folder
    with pytest.raises(ConfigError) as error:
        phasescan.load(folder)
    assert error.value.problems == [next(p for p in error.value.problems if says in p)]
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="holds an unreadable manifest.json; nothing in it was changed"):
        run_sweep(compose(*TINY, "save_weights=all"), folder)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_damaged_shard_files_are_one_line_each_in_merge(kept, tmp_path, capsys):
    import shutil

    from phasescan import merge
    sweep_dir = tmp_path / "sharded"
    for i in (0, 1):
        shutil.copytree(kept[0], sweep_dir / f"shard-{i}-of-2")
    (sweep_dir / "shard-0-of-2" / results.CONFIG).write_text("sweep: {a: [\n")
    (sweep_dir / "shard-1-of-2" / results.MANIFEST).write_text("")
    assert merge.main([str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"phasescan.merge: {sweep_dir}: cannot merge:" and len(err) == 3, err
    assert "shard-0-of-2/config.yaml: not valid YAML" in err[1]
    assert "shard-1-of-2/manifest.json: unreadable (JSONDecodeError" in err[2]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["shard-0-of-2", "shard-1-of-2"]


def test_plot_with_damaged_kept_weights_is_one_line(kept, tmp_path, capsys):
    from phasescan import plot
    out, frame = kept
    run = frame["run_id"].iloc[0]
    folder = copy_of(out, tmp_path)
    path = weights.path_of(folder, run)
    good = path.read_bytes()
    path.write_bytes(good[:300])  # truncated
    assert plot.main([str(folder), "--runs", run]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"phasescan.plot: cannot read {path}: not a readable .npz file") and "\n" not in err
    path.write_bytes(good)
    arrays = weights.load(path)
    np.savez(path, **arrays | {"embed": arrays["embed"][:, :8]})  # not the run's d_model
    assert plot.main([str(folder), "--runs", run]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"phasescan.plot: the kept weights of {run}") and "\n" not in err, err
    assert 'For parameter "embed"' in err and "(11, 8)" in err


@pytest.mark.parametrize("overrides, says", [
    ({"task": 5}, "task=5: expected a mapping of p, "),
    ({"sweep": None}, "sweep=None: expected a mapping of name, seeds, "),
    ({"sweep": {"axes": None}}, "sweep.axes=None: expected a mapping of p, train_frac, "),
    ({"sweep": "width_vs_attn"}, "sweep='width_vs_attn': expected a mapping"),
    ({"out_dir": 5}, "out_dir=5: must be null (results/<sweep.name>/<time>/) or a folder path"),
    ({"out_dir": ""}, "out_dir='': must be null"),
    ({"task": {"pp": 1}}, "task.pp: unknown key (allowed: p, "),
    ({"sweep": {"axes": {"nope": [1]}}}, "sweep.axes.nope: unknown axis (allowed: p, "),
    ({"train": {"warmup_steps": "${train.nope}"}}, "train.warmup_steps: Interpolation key 'train.nope'"),
    ([5], "overrides[0]=5: expected a string key=value"),
    ([None], "overrides[0]=None: expected a string key=value"),
    (["task.p"], "task.p: not an override (expected key=value): missing EQUAL"),
    (["task.p=[1,"], "task.p=[1,: not an override"),
])
def test_the_python_api_names_the_bad_key(tmp_path, monkeypatch, overrides, says):
    import phasescan
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        phasescan.run(overrides)
    assert len(error.value.problems) == 1 and error.value.problems[0].startswith(says), error.value.problems
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_takes_the_dict_form_range_and_interpolations(tmp_path):
    import phasescan
    from phasescan.runner.sweep import make_plan
    cfg, _, _ = phasescan.configure({"task": {"p": 11}, "train": {"warmup_steps": "${train.steps}"},
                                     "sweep": {"axes": {"attn_rate": {"linspace": [0, 1, 3]}}}},
                                    out_dir=tmp_path / "a b" / "ü ñ é")
    plan = make_plan(cfg)
    assert sorted({r["attn_rate"] for r in plan.runs}) == [0.0, 0.5, 1.0]
    assert cfg["train"]["warmup_steps"] == cfg["train"]["steps"]
    assert cfg["out_dir"] == str(tmp_path / "a b" / "ü ñ é")


def test_config_yaml_is_written_resolved_and_shards_with_interpolations_merge(tmp_path):
    """A shard's config.yaml kept `${train.steps}`, and the merge read it as a string."""
    import phasescan
    from phasescan.runner.merge_shards import merge
    out = tmp_path / "one"
    run_cli(*TINY, "train.steps=40", "train.warmup_steps=${train.steps}", f"out_dir={out}")
    assert results.read_config(out)["train"]["warmup_steps"] == 40
    assert "${" not in (out / results.CONFIG).read_text()
    sweep_dir = tmp_path / "sharded"  # shards written by an earlier phasescan: unresolved
    for i in (0, 1):
        phasescan.run([*TINY, "train.steps=40", "train.warmup_steps=40", "sweep.num_shards=2",
                       f"sweep.shard={i}"], out_dir=sweep_dir)
        config = sweep_dir / f"shard-{i}-of-2" / results.CONFIG
        config.write_text(config.read_text().replace("warmup_steps: 40", "warmup_steps: ${train.steps}"))
    assert len(merge(sweep_dir)) == 4
    assert results.read_config(sweep_dir)["train"]["warmup_steps"] == 40


def test_the_resume_command_runs_when_pasted_for_any_folder_name(tmp_path, monkeypatch):
    import shlex

    from phasescan import __main__ as cli
    folder = tmp_path / "a b" / "ü ñ é it's \\"
    monkeypatch.setattr(sys, "argv", ["phasescan", *TINY, "out_dir=elsewhere"])
    command = cli.resume_command(folder)
    assert command.startswith("phasescan ") and "out_dir=elsewhere" not in command
    pasted = shlex.split(command)[1:]  # as the shell hands it over
    proc = subprocess.run([sys.executable, "-m", "phasescan", *pasted, "--cfg", "job"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml
    assert yaml.safe_load(proc.stdout)["out_dir"] == str(folder)


def test_validation_is_linear_in_an_axis_length_and_run_ids_are_unchanged():
    """values.count in a set comprehension: 80k values took 80 s; a million-run grid did not
    finish make_plan. 200,000 runs now take a second or two (the bound is only a hang guard)."""
    code = ("import sys, time; from phasescan.core.config import compose; "
            "from phasescan.runner.sweep import make_plan; start = time.perf_counter(); "
            "plan = make_plan(compose(*sys.argv[1:])); print(len(plan.runs), time.perf_counter() - start)")
    proc = subprocess.run([sys.executable, "-c", code, *TINY, "sweep.seeds=1",
                           "sweep.axes.attn_rate='linspace(0,1,200000)'"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # a subprocess: a hang fails
    n_runs, seconds = proc.stdout.split()
    assert int(n_runs) == 200_000 and float(seconds) < 30, proc.stderr[-2000:]
    assert refused("sweep.axes.attn_rate=[0.5,0.25,0.5]")[0].startswith("sweep.axes.attn_rate: repeats 0.5")
    # the fast run_ids are run_id's own, for axes of every type, variants and a fixed split
    runs = grid.expand(compose(*TINY, "sweep.axes.act=[relu,gelu]", "sweep.axes.batch_size=[null,32]",
                               "task.split_seed=7", "sweep.variants=[{lr: 0.001},{lr: 0.01, beta1: 0.5}]"))
    assert len(runs) == 32 and all(run["run_id"] == grid.run_id(run) for run in runs)


@pytest.fixture
def compile_cache(tmp_path):
    """A persistent compile cache for one test (speed only: the same programs again)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


class Killed(BaseException):
    """A kill -9 at an atomic write: nothing after it runs (not an Exception: nothing catches it)."""


def test_a_kill_at_any_atomic_write_resumes_to_the_same_folder(tmp_path, monkeypatch, compile_cache):
    """For each kind of atomic write of a sweep (the manifest, config.yaml, a checkpoint, a chunk,
    runs.parquet, ...), a kill just before its first one and a resume give the uninterrupted
    runs.parquet bit for bit and a config.yaml that describes it."""
    overrides = ["task.p=11", "model.d_model=16", "train.steps=40", "sweep.seeds=2",
                 "sweep.axes.attn_rate=[0.0,1.0]", "plot=false", "metrics.grad_sym_triples=20",
                 "sweep.chunk_size=2", "sweep.segment_steps=20", "sweep.checkpoint_every=0"]
    cfg = compose(*overrides)
    real = results.write_atomic
    kinds = []

    def patch(fn):  # the checkpoint module holds its own name of the function
        monkeypatch.setattr(results, "write_atomic", fn)
        monkeypatch.setattr(checkpoint, "write_atomic", fn)

    def watching(path, write):
        kinds.append(Path(path).name.split("-")[0].split(".")[0] + Path(path).suffix)
        return real(path, write)
    patch(watching)
    want = run_sweep(cfg, tmp_path / "whole")
    firsts = sorted({kind: i for i, kind in reversed(list(enumerate(kinds)))}.items(), key=lambda kv: kv[1])
    assert [k for k, _ in firsts][:2] == ["manifest.json", "config.yaml"]
    assert {"chunk.npz", "chunk.parquet", "runs.parquet"} <= set(kinds), kinds
    for kind, index in firsts:
        out = tmp_path / f"killed-at-{kind}"
        count = [0]

        def killing(path, write):
            if count[0] == index:
                raise Killed(kind)
            count[0] += 1
            return real(path, write)
        patch(killing)
        with pytest.raises(Killed):
            run_sweep(cfg, out)
        patch(real)
        got = run_sweep(cfg, out)
        pd.testing.assert_frame_equal(pd.read_parquet(out / results.RUNS), pd.read_parquet(tmp_path / "whole" / results.RUNS))
        assert len(got) == len(want)
        assert results.read_config(out) == results.read_config(tmp_path / "whole"), kind
