"""Several local devices on a CPU (XLA's forced host devices; a subprocess each, since XLA reads
the device count when JAX starts), at the shapes that used to hang: the demo's p = 23, d = 64
with 2 models per device. There, before the fix, a sweep on 2 devices hung forever in its final
measurement: jaxlib's batched LAPACK SVD (circularity's principal components) splits its batch
over XLA:CPU's intra-op thread pool and blocks until the pieces are done, and with one such SVD
per device every thread of the pool (one per core) was blocked waiting (docs/scale-out.md,
Several devices). Every subprocess runs under a timeout, so a hang fails the test, not the job.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
from conftest import ROOT, TINY

from phasescan import load

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
# The demo's shapes; 2 attention rates x 2 seeds in one chunk of 4: 2 models per device on 2
# devices. 20 steps: the hang was in the measurement, whatever the training before it.
DEMO_SHAPES = ["task.p=23", "model.d_model=64", "train.steps=20", "sweep.seeds=2",
               "sweep.axes.attn_rate=[0.0,1.0]", "sweep.chunk_size=4", "plot=false",
               "metrics.grad_sym_triples=50"]


def sweep(*overrides, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phasescan", *DEMO_SHAPES, *overrides],
                            cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def floats_of(column: pd.Series) -> np.ndarray | None:
    """A column's float values, None if not float. A column of per-model arrays (one value per
    circle: as many as the model has) gives them all in a row, after each model's count."""
    if column.dtype.kind == "f":
        return column.to_numpy()
    first = column.iloc[0]
    if isinstance(first, (np.ndarray, list)) and np.asarray(first).dtype.kind == "f":
        return np.concatenate([[len(v), *np.asarray(v, dtype=float)] for v in column])
    return None


def test_two_devices_with_two_models_each_finish_with_the_one_device_table(tmp_path):
    """The table of 2 devices equals the one-device table: every label and non-float column
    exactly, the float metrics (and the per-frequency and per-circle arrays) to float32
    rounding, rtol 1e-5 with atol 1e-6 for values near 0. Not bit for bit: each device runs a
    program for its own 2 models, trained vmapped and measured one after another (on a CPU),
    where one device vmaps all 4, and XLA may then order a sum's terms differently (~1e-7
    relative per operation). Measured here: the metrics of the same state differ by at most
    3e-6 relative (circularity), the weights after 20 steps by 8e-7. Training amplifies such
    differences (after 100 steps the weights differ by ~5e-4 and some metrics by ~1e-4
    relative), so the test trains briefly: the hang was in the final measurement."""
    one, two = tmp_path / "one", tmp_path / "two"
    both = [sweep(f"out_dir={one}"), sweep(f"out_dir={two}", env=TWO_DEVICES)]  # side by side
    for proc in both:
        try:
            _, err = proc.communicate(timeout=400)  # two devices hung here forever before
        except subprocess.TimeoutExpired:
            for p in both:
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
    assert json.loads((two / "manifest.json").read_text())["devices_used"] == 2
    got, want = load(two), load(one)
    assert list(got.columns) == list(want.columns) and len(got) == 4
    approximate = [c for c in want.columns if floats_of(want[c]) is not None]
    assert {"circularity", "grad_sym", "test_acc"} <= set(approximate)
    pd.testing.assert_frame_equal(got.drop(columns=approximate), want.drop(columns=approximate))
    for column in approximate:
        np.testing.assert_allclose(floats_of(got[column]), floats_of(want[column]), rtol=1e-5,
                                   atol=1e-6, err_msg=column)


def test_a_second_ctrl_c_ends_the_sweep_at_once(tmp_path):
    """Ctrl-C twice while the device trains one long segment: the first is heard at once and
    asks for a stop after the segment (minutes away), the second ends the process within
    seconds, exit 130, with the one line that says how to resume. Before, the main thread
    waited for the device where no signal handler runs, heard neither, and exited only once
    the segment was done (never, when the device was stuck)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "phasescan", *TINY, "train.steps=1000000",
                             "sweep.segment_steps=1000000", f"out_dir={out}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []

    def read_stderr():
        for line in proc.stderr:
            said.append(line)
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300  # compiling takes seconds, or minutes on a busy CPU
        while "compiled the programs" not in read(out / "phasescan.log"):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(said)[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)  # the segment is running: minutes of it
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while "stopping after this segment" not in "".join(said):  # the first one is heard
            assert proc.poll() is None and time.monotonic() < deadline, "".join(said)[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        assert proc.wait(timeout=30) == 130
        assert time.monotonic() - stopped < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    said = "".join(said)
    assert "Traceback" not in said, said[-2000:]
    assert said.count("Resume with:") == 1, said[-2000:]
    resume = said.split("Resume with:")[1].strip().splitlines()[0]
    assert resume.startswith("python -m phasescan") and f"out_dir={out}" in resume


def read(path) -> str:
    return path.read_text() if path.exists() else ""
