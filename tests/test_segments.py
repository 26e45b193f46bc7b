"""Training in segments: the bar moves inside a chunk, a stop is honoured within one segment, and
a sweep killed inside a chunk resumes there with the numbers of an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose

from phasescan.engine.chunk import compile_chunk, run_chunk
from phasescan.engine.train import Spec
from phasescan.runner.sweep import run_sweep
from phasescan.core import grid
from phasescan.store import checkpoint, results

# One chunk of 2 models, long enough to be stopped in the middle: 40 segments of 50 steps, the
# state saved after every one of them.
LONG = ["task.p=11", "model.d_model=16", "train.steps=2000", "sweep.seeds=1",
        "sweep.axes.attn_rate=[0.0,1.0]", "plot=false", "metrics.grad_sym_triples=20",
        "sweep.segment_steps=50", "sweep.checkpoint_every=0"]
COLUMNS = ["train_loss", "test_loss", "grad_sym", "dist_irr", "circularity", "param_norm",
           "spike_loss", "fit_step"]


def test_segments_give_the_numbers_of_one_call(tiny_cfg):
    """Advancing a chunk 60 steps at once or in segments of 7 (the last one partial) trains the
    same models: the steps are the same, the segment boundary only hands the state back."""
    runs = grid.expand(tiny_cfg)
    spec = Spec.from_run(runs[0])
    whole = run_chunk(compile_chunk(spec, len(runs), tiny_cfg["metrics"], segment=60), runs, len(runs))
    seen = []
    pieces = run_chunk(compile_chunk(spec, len(runs), tiny_cfg["metrics"], segment=7), runs,
                       len(runs), on_segment=lambda step, done, state: seen.append((step, done)))
    assert seen[:2] == [(7, 7), (14, 7)] and seen[-1] == (60, 4) and len(seen) == 9
    for name in COLUMNS:
        np.testing.assert_allclose(pieces[name], whole[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_sweep(compose(*LONG), tmp_path_factory.mktemp("whole") / "out")


def start(out, log_path):
    command = [sys.executable, "-m", "phasescan", *LONG, f"out_dir={out}"]
    return command, subprocess.Popen(command, cwd=ROOT, stdout=open(log_path, "w"),
                                     stderr=subprocess.STDOUT)


def wait_for_state(proc, out, min_step=200, timeout=300):
    """Until the chunk's saved state has reached `min_step` (the process is inside the chunk)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        for path in (out / checkpoint.STATE_DIR).glob("chunk-*.npz"):
            saved = checkpoint.load(path)
            if saved is not None and saved[1] >= min_step:
                return saved[1]
        time.sleep(0.05)
    raise AssertionError(f"no saved state reached step {min_step}")


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got["run_id"]) == list(want["run_id"])
    for name in COLUMNS:  # bit for bit: the same steps in the same programs
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert list(got["algorithm"]) == list(want["algorithm"])


def test_killed_inside_a_chunk_resumes_there(tmp_path, uninterrupted):
    out = tmp_path / "out"
    command, proc = start(out, tmp_path / "first.log")
    step = wait_for_state(proc, out)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / results.RUNS).exists() and results.read_chunks(out) is None  # mid-chunk
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [line for line in again.stderr.splitlines() if "resuming 2 model(s) at step" in line]
    assert resumed and int(resumed[0].split("at step ")[1].split()[0]) >= step
    assert not list((out / checkpoint.STATE_DIR).glob("*.npz"))  # removed once the rows are in
    assert_same_rows(pd.read_parquet(out / results.RUNS), uninterrupted)


def test_sigterm_stops_within_a_segment_and_says_how_to_resume(tmp_path, uninterrupted):
    out = tmp_path / "out"
    command, proc = start(out, tmp_path / "first.log")
    wait_for_state(proc, out, min_step=100)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert time.monotonic() - stopped_at < 30  # one segment of 50 tiny steps, not the chunk
    said = (tmp_path / "first.log").read_text()
    assert "stopping after this segment" in said and "Resume with:" in said
    resume = said.split("Resume with:")[1].strip().splitlines()[0]
    assert resume.startswith("python -m phasescan") and f"out_dir={out}" in resume
    assert "Traceback" not in said
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming 2 model(s) at step" in again.stderr
    assert_same_rows(pd.read_parquet(out / results.RUNS), uninterrupted)


def test_the_bar_moves_during_a_chunk(tmp_path):
    """Progress is counted in model-steps, segment by segment: a log shows the compile note
    before training and the bar's rates and ETA."""
    proc = subprocess.run([sys.executable, "-m", "phasescan", *TINY, "sweep.segment_steps=20",
                           f"out_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bucket 1 of 1: 4 models" in proc.stderr
    assert "models/s" in proc.stderr and "model-steps/s" in proc.stderr and "ETA" in proc.stderr


def test_the_bar_shows_a_rate_from_the_first_finished_segment():
    """One segment that takes longer than rich's default 30 s window would leave '? models/s';
    the rate is over everything done so far, so one advance is enough (here 0.2 s apart)."""
    import io
    import time

    from phasescan.core.progress import Progress
    out = io.StringIO()
    bar = Progress(total_models=4, total_steps=400, stream=out)
    time.sleep(0.2)
    bar.advance(200)
    bar.models_done(2)
    bar.close()
    text = out.getvalue()
    assert "? models/s" not in text and "model-steps/s" in text
    assert "2/4 models done,  50% of model-steps" in text


def test_a_log_file_gets_the_bar_as_a_line_now_and_then(monkeypatch):
    """Not a terminal (a background study's nohup log): a line of rate and ETA after a segment
    at most once a LOG_EVERY_S, not only at the end."""
    import io

    from phasescan.core import progress
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    out = io.StringIO()
    bar = progress.Progress(total_models=4, total_steps=400, stream=out)
    bar.advance(100)
    assert "0/4 models done,  25% of model-steps" in out.getvalue() and "ETA" in out.getvalue()
    monkeypatch.setattr(progress, "LOG_EVERY_S", 3600.0)
    bar.advance(100)  # within the hour: no second line before the end
    assert "50% of model-steps" not in out.getvalue()
    bar.close()
    assert "50% of model-steps" in out.getvalue()


# One chunk of 2 models in segments of 50 steps: a state is saved at step 50 by hand.
SHORT = ["task.p=13", "model.d_model=16", "train.steps=100", "sweep.seeds=2", "sweep.axes.attn_rate=[0.0]",
         "plot=false", "metrics.grad_sym_triples=20", "sweep.chunk_size=2", "sweep.checkpoint_every=0"]


class Stop(Exception):
    pass


def killed_folder(out, cfg):
    """out_dir as a sweep killed in its first chunk leaves it: the manifest and config.yaml."""
    from phasescan.runner import sweep
    sweep.prepare_out_dir(out, "{}", sweep.make_plan(cfg).identity)


def state_at_50(cfg, runs):
    """The chunk's state after its first segment of 50 steps (as a kill right after the save leaves it)."""
    program = compile_chunk(Spec.from_run(runs[0]), 2, cfg["metrics"] | {"learned_acc": 0.9}, segment=50)
    saved = []

    def on_segment(step, done, state_fn):
        saved.append(state_fn())
        raise Stop
    with pytest.raises(Stop):
        run_chunk(program, runs, 2, on_segment=on_segment)
    return saved[0]


def test_a_state_saved_with_another_segment_length_is_resumed(tmp_path, capsys, caplog):
    cfg = compose(*SHORT, "sweep.segment_steps=50")
    runs = grid.expand(cfg)
    whole = run_sweep(cfg, tmp_path / "whole")
    out = tmp_path / "out"
    killed_folder(out, cfg)
    state = state_at_50(cfg, runs)
    checkpoint.save(checkpoint.path_of(out, [r["run_id"] for r in runs], 2), 50, state.step,
                    state.leaves, state.logged)
    caplog.set_level("INFO", "phasescan")
    resumed = run_sweep(compose(*SHORT, "sweep.segment_steps=30"), out)
    assert "resuming 2 model(s) at step 50" in caplog.text
    assert_same_rows(resumed, whole)  # segments of 30 from step 50: the same steps, the same bits
    assert "starts over" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["too few arrays", "another width"])
def test_a_state_that_does_not_fit_is_set_aside_and_the_chunk_starts_over(tmp_path, capsys, damage):
    cfg = compose(*SHORT, "sweep.segment_steps=50")
    runs = grid.expand(cfg)
    whole = run_sweep(cfg, tmp_path / "whole")
    out = tmp_path / "out"
    if damage == "too few arrays":
        state = state_at_50(cfg, runs)
        leaves = state.leaves[:-1]
    else:  # the same runs' chunk at another width (a model changed under the same run_ids)
        narrow = compose(*SHORT, "model.d_model=8")
        state = state_at_50(narrow, grid.expand(narrow))
        leaves = state.leaves
    killed_folder(out, cfg)
    path = checkpoint.path_of(out, [r["run_id"] for r in runs], 2)
    checkpoint.save(path, 50, state.step, leaves, state.logged)
    resumed = run_sweep(cfg, out)
    assert_same_rows(resumed, whole)
    err = [line for line in capsys.readouterr().err.splitlines() if str(path) in line]
    assert len(err) == 1 and "set aside as" in err[0] and "the chunk starts over" in err[0], err
    assert (path.parent / (path.name + ".unusable")).is_file() and not path.exists()


def test_the_bar_keeps_compiling_apart_and_estimates_before_the_first_segment():
    import io

    from phasescan.core.progress import Progress
    out = io.StringIO()  # not a terminal: the bar's state is written when it closes
    Progress(total_models=4, total_steps=400, stream=out, estimate_s=120.0).close()
    assert "ETA ~2m00s (estimate)" in out.getvalue() or "ETA ~1m59s (estimate)" in out.getvalue()
    out = io.StringIO()
    bar = Progress(total_models=4, total_steps=400, stream=out)
    bar.compiled(1e6)  # more than the elapsed time: no training time yet, no rate
    bar.advance(100)
    bar.close()
    text = out.getvalue().splitlines()[-1]
    assert "(compiling 277h46m)" in text and "? models/s" in text
