"""The test session writes no cache into the user's home (conftest.TEST_HOME)."""
import os
from pathlib import Path

from conftest import TEST_HOME, TINY, compose

import phasescan
from phasescan.runner import summary


def test_a_run_in_process_keeps_its_caches_out_of_the_users_home(tmp_path):
    assert Path(os.path.expanduser("~")) == TEST_HOME
    phasescan.run([*TINY, "train.steps=20"], out_dir=tmp_path / "out")
    assert (TEST_HOME / ".cache" / "phasescan" / "jax").is_dir()
    assert summary.rates_path(compose(*TINY)).is_relative_to(TEST_HOME)  # rates.json too (runs >= 30 s)
