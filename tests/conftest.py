import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from phasescan.core.config import compose  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]

# Tests never write into the user's home: phasescan's caches (compile_cache's default
# ~/.cache/phasescan: traced and compiled programs, rates.json) go to a home of the test session's
# own, in process and in every subprocess. pyenv's shims still find their root.
os.environ.setdefault("PYENV_ROOT", str(Path.home() / ".pyenv"))
TEST_HOME = Path(tempfile.mkdtemp(prefix="phasescan-tests-home-"))
os.environ["HOME"] = str(TEST_HOME)

# A tiny but real configuration: every test that trains uses it unless it needs more.
TINY = ["task.p=11", "model.d_model=16", "train.steps=60", "sweep.seeds=2",
        "sweep.axes.attn_rate=[0.0,1.0]", "plot=false", "metrics.grad_sym_triples=50"]


def run_cli(*overrides, check=True, env=None, timeout=600):
    """Run `python -m phasescan` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "phasescan", *overrides], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"phasescan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def tiny_cfg():
    return compose(*TINY)
