"""Label fragility (phasescan/analysis/stability.py, `python -m phasescan.report DIR --stability
OTHER_DIR`): the same sweep's labels trained twice, compared run by run and cell by cell."""
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from phasescan import report
from phasescan.analysis import stability
from phasescan.plots import diagrams, draw
from phasescan.core.config import ConfigError


def frame(labels: dict) -> pd.DataFrame:
    """runs of cells {(d_model, attn_rate): [label per seed]}, run_ids from the cell and seed."""
    return pd.DataFrame([{"run_id": f"{d}-{rate}-{seed}", "d_model": d, "attn_rate": rate, "seed": seed,
                          "algorithm": label, "grad_sym": 0.5, "dist_irr": 0.5}
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
    assert f"Recorded in {tmp_path / 'a' / stability.STABILITY}" in out
    assert report.main([str(tmp_path / "a"), "--stability", str(tmp_path / "nowhere")]) == 2
    assert "no runs.parquet in" in capsys.readouterr().err


def test_recorded_comparisons_give_the_fragile_cells_of_any_axes(tmp_path):
    runs, cell = frame(A), ["d_model", "attn_rate"]
    assert stability.fragile_cells(runs, tmp_path, cell) is None  # nothing compared: unknown, not "none"
    stability.record(tmp_path, "b", runs, frame(B))
    stability.record(tmp_path, "b", runs, frame(B))  # the same comparison again replaces its rows
    assert len(pd.read_parquet(tmp_path / stability.STABILITY)) == len(runs)
    assert stability.fragile_cells(runs, tmp_path, cell).values.tolist() == [[16, 1.0]]
    # a second training (another folder) is kept beside the first: a cell fragile in either is
    c = {**A, (32, 0.0): ["pizza", "clock", "clock", "clock"]}
    stability.record(tmp_path, "c", runs, frame(c))
    assert sorted(stability.fragile_cells(runs, tmp_path, cell).values.tolist()) == [[16, 1.0], [32, 0.0]]
    # a diagram that pools the widths has cells of 8 runs: leads of 4 and 6, against 2 changed runs
    assert stability.fragile_cells(runs, tmp_path, ["attn_rate"]).empty


def outlines(fig) -> list[Rectangle]:
    return [r for ax in fig.axes for r in ax.patches
            if isinstance(r, Rectangle) and r.get_linestyle() == "--" and r.get_edgecolor()[3] > 0]


def test_the_phase_diagram_outlines_the_fragile_cells(tmp_path):
    runs = frame(A)
    stability.record(tmp_path, "b", runs, frame(B))  # what a folder's figures read (draw, report --html)
    name, fig = next(draw.sweep_figures(runs, "attn_rate", "d_model", [], None, {}, out_dir=tmp_path))
    assert name == "phase_diagram" and len(outlines(fig)) == 1
    fragile = stability.compare(runs, frame(B), ["attn_rate", "d_model"]).query("fragile")[["attn_rate", "d_model"]]
    fig = diagrams.phase_diagram(runs, "attn_rate", "d_model", [], None, fragile=fragile)
    (outline,) = outlines(fig)
    assert outline.get_xy() == pytest.approx((1 - 0.46, 0 - 0.46))  # column attn_rate 1.0, row d_model 16
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("fragile" in t and "1 of 4 cells" in t for t in texts), texts
    assert not outlines(diagrams.phase_diagram(runs, "attn_rate", "d_model", [], None))
    one_width = runs[runs["d_model"] == 16]  # one y value: the bars of the fragile rate are outlined
    fig = diagrams.phase_diagram(one_width, "attn_rate", "d_model", [], None,
                                 fragile=fragile[fragile["d_model"] == 16])
    assert len(outlines(fig)) == 1 and outlines(fig)[0].get_x() == pytest.approx(1 - 0.46)
