"""Scaling out: grid shards balanced by cost, a submitit multirun merged, several local devices.

Sharded and multi-device runs compile programs of other sizes than the single-process run, so
float metrics may differ in the last bits (float32 reassociation): they are compared with
rtol 1e-5 / atol 1e-6 (as the vmapped-vs-alone engine test does); every other column exactly.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose, run_cli

from phasescan import load
from phasescan.engine.train import Spec
from phasescan.runner.sweep import chunk_size_for, run_sweep, sweep_devices
from phasescan.core import grid, shard
from phasescan.core.config import ConfigError
from phasescan.store.results import METRIC_COLUMNS

SHARDED = ["sweep.num_shards=2", "sweep.shard=range(2)", "hydra/launcher=submitit_local"]


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got.columns) == list(want.columns)
    floats = [c for c in METRIC_COLUMNS if want[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(got.drop(columns=floats), want.drop(columns=floats))
    for col in floats:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-5, atol=1e-6, err_msg=col)


def merge_cli(sweep_dir):
    return subprocess.run([sys.executable, "-m", "phasescan.merge", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The TINY sweep in one process on one device."""
    return run_sweep(compose(*TINY), tmp_path_factory.mktemp("single") / "run")


@pytest.fixture(scope="module")
def multirun_dir(tmp_path_factory):
    """The TINY sweep as a 2-shard Hydra multirun through submitit_local (two processes)."""
    sweep_dir = tmp_path_factory.mktemp("multirun") / "sweep"
    run_cli("-m", *TINY, *SHARDED, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def test_shards_partition_the_grid_balanced_by_cost():
    runs = grid.expand(compose("sweep=width_vs_attn"))  # d 32..512: costs differ 256x
    units = shard.units(runs, {"chunk_size": "auto"})  # auto: single runs
    assert units == [[r] for r in runs]
    shard_of = shard.assign(units, 8)
    again = grid.expand(compose("sweep=width_vs_attn"))
    assert shard_of == shard.assign(shard.units(again, {"chunk_size": "auto"}), 8)  # deterministic
    picked = [shard.select(runs, {"num_shards": 8, "shard": i}) for i in range(8)]
    ids = [r["run_id"] for part in picked for r in part]
    assert sorted(ids) == sorted(r["run_id"] for r in runs) and len(set(ids)) == len(runs)
    loads = [sum(shard.cost(r) for r in part) for part in picked]
    assert max(loads) / min(loads) < 1.01
    counts = [len(part) for part in picked]
    assert max(counts) - min(counts) > 1  # balanced by cost, not by count (that would give +-1)


def test_with_a_chunk_size_shards_take_the_one_process_chunks_and_merge_to_its_table(tmp_path):
    """sweep.chunk_size=2: one process trains the chunks [0, 1], [2, 3] of the grid; each shard
    trains whole ones of them, so the merged table is that process's bit for bit."""
    from phasescan.runner import merge_shards
    one = run_sweep(compose(*TINY, "sweep.chunk_size=2"), tmp_path / "one")
    chunks = grid.chunks(grid.expand(compose(*TINY)), lambda bucket: 2)
    for i in range(2):
        cfg = compose(*TINY, "sweep.chunk_size=2", "sweep.num_shards=2", f"sweep.shard={i}")
        mine = {r["run_id"] for r in shard.select(grid.expand(cfg), cfg["sweep"])}
        assert mine in [{r["run_id"] for r in c} for c in chunks]  # one whole chunk each
        run_sweep(cfg, tmp_path / "sharded" / shard.folder_name(i, 2))
    merged = merge_shards.merge(tmp_path / "sharded")
    pd.testing.assert_frame_equal(merged, one)
    with pytest.raises(ConfigError, match=r"sweep.shard=2: nothing to train, the grid's 4 runs form 2 chunks"):
        shard.select(grid.expand(compose(*TINY)), {"num_shards": 3, "shard": 2, "chunk_size": 2})


def test_bad_shard_and_device_settings_are_reported():
    with pytest.raises(ConfigError, match=r"sweep.shard=2: must be an integer in 0..1"):
        shard.select([], {"num_shards": 2, "shard": 2})
    with pytest.raises(ConfigError, match="sweep.num_shards=0"):
        shard.select([], {"num_shards": 0, "shard": 0})
    with pytest.raises(ConfigError, match="sweep.devices=99: must be null"):
        sweep_devices({"devices": 99})


def test_chunks_are_a_multiple_of_the_device_count():
    spec = Spec.from_run(grid.expand(compose(*TINY))[0])
    assert chunk_size_for(spec, 10, 3, 1024, n_devices=4) == 4
    assert chunk_size_for(spec, 10, 10, 1024, n_devices=4) == 12
    assert chunk_size_for(spec, 10, "auto", 2, n_devices=4) == 8


def test_multirun_shards_merge_to_the_single_process_table(multirun_dir, reference):
    shards = sorted(p.name for p in multirun_dir.glob("shard-*"))
    assert shards == ["shard-0-of-2", "shard-1-of-2"]
    assert [len(load(multirun_dir / s)) for s in shards] == [2, 2]
    proc = merge_cli(multirun_dir)
    assert proc.returncode == 0, proc.stderr
    assert_same_table(pd.read_parquet(multirun_dir / "runs.parquet"), reference)
    assert_same_table(load(multirun_dir), reference)


def test_missing_duplicated_or_unfinished_shard_is_reported(multirun_dir, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(multirun_dir / "shard-0-of-2", missing / "shard-0-of-2")
    proc = merge_cli(missing)
    assert proc.returncode == 2 and "shard 1 of 2: missing" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (missing / "runs.parquet").exists()

    duplicated = tmp_path / "duplicated"
    shutil.copytree(multirun_dir, duplicated)
    shutil.copytree(multirun_dir / "shard-1-of-2", duplicated / "again" / "shard-1-of-2")
    proc = merge_cli(duplicated)
    assert proc.returncode == 2 and "shard 1 of 2: found 2 times" in proc.stderr, proc.stderr

    unfinished = tmp_path / "unfinished"
    shutil.copytree(multirun_dir, unfinished, ignore=shutil.ignore_patterns("runs.parquet"))
    for chunk in (unfinished / "shard-0-of-2" / "chunks").glob("*.parquet"):
        chunk.unlink()
    proc = merge_cli(unfinished)
    assert proc.returncode == 2 and "shard 0 of 2" in proc.stderr and "unfinished, 0 of 2" in proc.stderr
    assert not (unfinished / "runs.parquet").exists()


def test_four_devices_equal_one(tmp_path, reference):
    out = tmp_path / "four"
    run_cli(*TINY, f"out_dir={out}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert json.loads((out / "manifest.json").read_text())["devices_used"] == 4
    assert_same_table(load(out), reference)


def test_devices_running_models_one_at_a_time_equal_one_device(tmp_path, reference):
    """sweep.vmap_group=1 on 2 devices: each device loops over its 2 models (lax.map) and the
    table is the one-device, all-vmapped one."""
    out = tmp_path / "grouped"
    run_cli(*TINY, "sweep.vmap_group=1", f"out_dir={out}",
            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert json.loads((out / "manifest.json").read_text())["devices_used"] == 2
    assert_same_table(load(out), reference)
