"""Label fragility (phasescan/analysis/stability.py, `python -m phasescan.report DIR --stability
OTHER_DIR`): the same sweep's labels trained twice, compared run by run and cell by cell."""
import pandas as pd
import pytest

from phasescan import report
from phasescan.analysis import stability
from phasescan.spec.config import ConfigError


def frame(labels: dict) -> pd.DataFrame:
    """runs of cells {(d_model, attn_rate): [label per seed]}, run_ids from the cell and seed."""
    return pd.DataFrame([{"run_id": f"{d}-{rate}-{seed}", "d_model": d, "attn_rate": rate, "seed": seed,
                          "algorithm": label}
                         for (d, rate), cell in labels.items() for seed, label in enumerate(cell)])


A = {(16, 0.0): ["pizza"] * 4, (16, 1.0): ["clock", "clock", "pizza", "pizza"],
     (32, 0.0): ["pizza", "pizza", "pizza", "clock"], (32, 1.0): ["clock"] * 4}
B = {(16, 0.0): ["pizza"] * 4, (16, 1.0): ["clock", "pizza", "pizza", "pizza"],
     (32, 0.0): ["pizza", "pizza", "pizza", "pizza"], (32, 1.0): ["clock", "clock", "clock", "mixed"]}


def test_a_cell_is_fragile_when_its_changed_runs_could_decide_its_majority():
    cells = stability.compare(frame(A), frame(B), ["d_model", "attn_rate"]).set_index(["d_model", "attn_rate"])
    assert cells["changed"].tolist() == [0, 1, 1, 1]
    assert cells["unchanged share"].tolist() == [1.0, 0.75, 0.75, 0.75]
    # (16, 1): a 2-2 tie, Clock first in order, becomes Pizza 3-1: another majority
    assert cells.loc[(16, 1.0), ["majority", "majority (other)", "fragile"]].tolist() == ["clock", "pizza", True]
    # (32, 0): Pizza leads by 2, one run changed: the same majority, not fragile; (32, 1) alike
    assert cells.loc[(32, 0.0), ["lead", "fragile"]].tolist() == [2, False]
    assert not cells.loc[(32, 1.0), "fragile"] and not cells.loc[(16, 0.0), "fragile"]
    # a lead of 1 with one changed run is fragile even when the majority stayed
    close = {(8, 0.5): ["pizza", "pizza", "clock"]}
    again = {(8, 0.5): ["pizza", "pizza", "other"]}
    assert stability.compare(frame(close), frame(again), ["d_model", "attn_rate"])["fragile"].tolist() == [True]


def test_folders_of_different_sweeps_are_a_short_error(tmp_path):
    other = frame(A).assign(run_id=lambda f: "x" + f["run_id"])
    with pytest.raises(ConfigError, match="no run_id in common"):
        stability.compare(frame(A), other, ["d_model"])


def test_the_report_prints_the_shares_and_the_changed_runs(tmp_path, capsys):
    for name, labels in (("a", A), ("b", B)):
        (tmp_path / name).mkdir()
        frame(labels).to_parquet(tmp_path / name / "runs.parquet")
    assert report.main([str(tmp_path / "a"), "--stability", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "16 runs in both folders" in out and "13 (81.2%) keep their label, 3 change" in out
    assert "**Fragile cells:** 1 of 4." in out and "| 16-1.0-1 | 16 | 1 | 1 | clock | pizza |" in out
    assert report.main([str(tmp_path / "a"), "--stability", str(tmp_path / "nowhere")]) == 2
    assert "no runs.parquet in" in capsys.readouterr().err
