"""tracking=wandb (phasescan/store/tracking.py): each model one W&B run, logged offline here and read
back from wandb's own offline files: its config = the run's fields, its summary = its row of
runs.parquet, its history = its rows of history.parquet; each run once, resume included; a
failure of tracking is a warning; tracking=none never imports wandb."""
import json
import logging
import math
import struct
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, TINY, compose

from phasescan.runner import sweep
from phasescan.core.config import ConfigError
from phasescan.store import history, results, tracking

CURVES = TINY + ["train.log_every=20"]  # steps 0, 20, 40, 60: 4 history rows a run


def offline_records(path):
    """The records of one offline run's transaction log (run-<id>.wandb: W&B's LevelDB-style
    log of protobuf Records, which `wandb sync` uploads)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_runs(wandb_dir):
    """{W&B display name (our run_id): {run, config, summary, steps}} of every offline run."""
    found = {}
    for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run, config, summary, steps = None, {}, {}, []
        for record in offline_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({u.key: json.loads(u.value_json) for u in run.config.update})
            elif kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "summary":
                summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json)
                                for u in record.summary.update})
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in record.history.item}
                steps.append(items["step"])
        assert run.display_name not in found, f"{run.display_name} logged twice"
        found[run.display_name] = dict(run=run, config=config, summary=summary, steps=steps)
    return found


def same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == b


def check_logged(out_dir, wandb_dir, curves=True):
    frame = pd.read_parquet(out_dir / results.RUNS)
    logged = offline_runs(wandb_dir)
    assert sorted(logged) == sorted(frame["run_id"])  # one W&B run per model
    hist = pd.read_parquet(out_dir / history.HISTORY) if curves else None
    for row in frame.to_dict("records"):
        row = {k: tracking.plain(v) for k, v in row.items()}
        got = logged[row["run_id"]]
        for column, value in row.items():
            where = got["summary"] if column in results.METRIC_COLUMNS else got["config"]
            assert same(where[column], value), (row["run_id"], column, where[column], value)
        assert got["run"].run_group == f"demo-{out_dir.name}"
        assert got["run"].job_type == "transformer p=11 d_model=16 n_layers=1 steps=60"
        assert row["algorithm"] in got["run"].tags
        if curves:
            assert got["steps"] == sorted(hist.loc[hist["run_id"] == row["run_id"], "step"]) == [0, 20, 40, 60]
    assert sorted((out_dir / tracking.RECORD).read_text().split()) == sorted(frame["run_id"])


@pytest.fixture
def offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "wb"


def test_each_model_is_one_offline_run_with_its_row_and_curve_logged_once(tmp_path, offline,
                                                                          monkeypatch):
    out = tmp_path / "out"
    cfg = compose(*CURVES, "tracking=wandb", "sweep.chunk_size=2")  # two chunks, logged as written
    at_finish, finish = [], tracking.WandbSink.finish
    monkeypatch.setattr(tracking.WandbSink, "finish",
                        lambda self, frame: at_finish.append(len(self.logged)) or finish(self, frame))
    frame = sweep.run_sweep(cfg, out)
    assert len(frame) == 4 and at_finish == [4]  # each chunk's runs logged after it was written
    check_logged(out, offline)
    sweep.run_sweep(cfg, out)  # a rerun (resume of a finished sweep) logs nothing again
    assert len(list(offline.glob("wandb/offline-run-*"))) == 4


def test_tracking_none_never_imports_wandb_and_a_later_rerun_logs_the_runs(tmp_path, offline):
    out = tmp_path / "out"
    code = ("import sys; from phasescan.runner import sweep; from phasescan.core.config import compose; "
            f"sweep.run_sweep(compose(*{CURVES!r}), {str(out)!r}); print('wandb' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "False"
    assert not offline.exists() and not (out / tracking.RECORD).exists()
    sweep.run_sweep(compose(*CURVES, "tracking=wandb"), out)  # nothing to train: all caught up
    check_logged(out, offline)


def test_a_tracking_failure_is_a_warning_not_a_lost_sweep(tmp_path, offline, monkeypatch, caplog):
    def fail(self, row, curve):
        raise RuntimeError("no network")
    monkeypatch.setattr(tracking.WandbSink, "log_run", fail)
    with caplog.at_level(logging.WARNING, logger="phasescan"):
        frame = sweep.run_sweep(compose(*TINY, "tracking=wandb"), tmp_path / "out")
    assert len(frame) == 4 and (tmp_path / "out" / results.RUNS).is_file()
    warnings = [r.getMessage() for r in caplog.records if "tracking=wandb" in r.getMessage()]
    assert len(warnings) == 1 and "no network" in warnings[0]  # once, then tracking is off
    assert not (tmp_path / "out" / tracking.RECORD).exists()


@pytest.mark.parametrize("override, says", [
    ("tracking=mlflow", "tracking='mlflow': must be none or wandb"),
    ("tracking_options.mode=cloud", "tracking_options.mode='cloud': must be null"),
])
def test_bad_tracking_options_name_key_and_allowed_values(override, says, tmp_path):
    pytest.importorskip("wandb")
    with pytest.raises(ConfigError) as error:
        sweep.run_sweep(compose(*TINY, "tracking=wandb", override), tmp_path / "out")
    assert [p for p in error.value.problems if says in p] == error.value.problems
    assert not (tmp_path / "out").exists()


def test_wandb_not_installed_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError) as error:
        sweep.run_sweep(compose(*TINY, "tracking=wandb"), tmp_path / "out")
    assert error.value.problems == ['tracking=wandb: wandb is not installed; pip install "phasescan[wandb]"']
