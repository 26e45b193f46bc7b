"""The comparison with the paper (phasescan.report --paper) and the settling analysis on small
hand-built tables whose answers are known."""
import numpy as np
import pandas as pd
import pytest

from phasescan import report
from phasescan.analysis import boundary, settling
from phasescan.reports import paper


def study(switch: dict, seeds: int = 6, unlearned_from: dict | None = None) -> pd.DataFrame:
    """Per width: Pizza below its switch rate, Clock above; optionally unlearned from some rate."""
    rows = []
    for width, at in switch.items():
        for rate in np.round(np.linspace(0, 1, 11), 2):
            for seed in range(seeds):
                label = "pizza" if rate < at else "clock"
                if unlearned_from and rate >= unlearned_from.get(width, 2.0):
                    label = "unlearned"
                pizza = label == "pizza"
                rows.append({"d_model": width, "attn_rate": rate, "seed": seed, "p": 23, "steps": 3000,
                             "algorithm": label, "grad_sym": 0.99 if pizza else 0.4,
                             "dist_irr": 0.2 if pizza else 0.8, "dist_irr_top_wrong": 0.25 if pizza else 0.85,
                             "circularity": 0.999 if seed % 2 else 0.95, "test_acc": 1.0,
                             "train_loss": 1e-7, "param_norm": 20.0, "spike_loss": 0.0})
    return pd.DataFrame(rows)


def test_boundary_names_what_takes_over_and_finds_pizza_to_clock_among_learned_runs():
    # d = 16: unlearned from 0.3 on (the case), Clock would only come at 0.75
    runs = study({16: 0.75, 64: 0.55}, unlearned_from={16: 0.3})
    table = boundary.estimate(runs, against="clock", n_boot=100).set_index("d_model")
    assert table.loc[16, "status"] == "crossing" and table.loc[16, "replaced_by"] == "unlearned"
    assert table.loc[16, "against_status"] == "above"  # no Clock run there: no Pizza -> Clock boundary
    assert table.loc[64, "replaced_by"] == "clock" and 0.5 < table.loc[64, "against_boundary"] < 0.6
    assert set(table["x_axis"]) == {"attn_rate"} and set(table["y_axis"]) == {"d_model"}


def test_bins_medians_and_shares():
    runs = study({128: 0.55})
    table = paper.bins(runs).set_index("attn_rate bin")
    assert list(table.index) == ["0.0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-0.5", "0.5-0.6",
                                 "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1.0"]
    assert table.loc["0.9-1.0", "runs"] == 12  # rates 0.9 and 1.0 share the last bin
    assert table.loc["0.0-0.1", "median grad_sym"] == 0.99 and table.loc["0.9-1.0", "median dist_irr_top_wrong"] == 0.85
    assert table.loc["0.5-0.6", "pizza"] == 1.0 and table.loc["0.6-0.7", "clock"] == 1.0
    assert table.loc["0.0-0.1", "circ >= 0.995"] == 0.5


def test_convergence_gives_the_generalization_delay_where_the_folder_has_it():
    runs = study({128: 0.55}, seeds=4)
    assert (paper.convergence(runs)["generalization_delay"] == "n/a").all()  # a folder from before the dynamics
    runs["generalization_delay"] = np.arange(len(runs), dtype=float)  # 0 .. 43
    row = paper.convergence(runs).set_index("d_model").loc["all"]
    assert row["generalization_delay"] == "21.5 (10.8 / 32.2)"
    assert row["runs"] == 44 and row["seeds"] == 4  # what the medians cover


def test_verdicts_follow_their_rules():
    rising = study({32: 0.45, 64: 0.55, 128: 0.65, 256: 0.75})
    bounds = paper.boundaries(rising, n_boot=100)
    slope = paper.width_slope(rising, n_boot=100)
    assert 0.09 < slope["slope"] < 0.11 and slope["lo"] > 0  # +0.1 per doubling, seeds agree
    first, second, third = paper.verdicts(rising, bounds, slope)
    assert "reproduced" in first and "0.6" in first and second.split(": ")[1].startswith("reproduced")
    # the same crossing by grad_sym alone, against the authors' table's 0.70 by that rule
    assert third.endswith("not reproduced: at d = 128 0.65 [0.65, 0.65].")
    falling = study({32: 0.95, 64: 0.35, 128: 0.65, 256: 0.25})
    slope = paper.width_slope(falling, n_boot=100)
    assert slope["hi"] < 0
    assert paper.verdicts(falling, paper.boundaries(falling, n_boot=100), slope)[1].split(": ")[1].startswith(
        "contradicted")
    one = study({128: 0.65})  # a fixed-width study says nothing on widths
    second = paper.verdicts(one, paper.boundaries(one, n_boot=100), paper.width_slope(one, n_boot=100))[1]
    assert second == "2. Wider models stay Pizza to higher rates: not tested here: one width (128); a width sweep tests it."
    # one attention rate (the delay study): neither boundary is tested, whatever its labels
    single = one[one["attn_rate"] == 0.5]
    first, _, third = paper.verdicts(single, paper.boundaries(single, n_boot=100), paper.width_slope(single, n_boot=100))
    untested = "not tested here: one attention rate (0.5); a sweep over attention rates tests it."
    assert first == f"1. The attention-rate transition: {untested}"
    assert third == f"3. The boundary by grad_sym alone: {untested}"


def test_cli_paper(tmp_path, capsys):
    study({32: 0.45, 128: 0.65}).to_parquet(tmp_path / "runs.parquet")
    assert report.main([str(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "**Verdicts**" in out and "| 128 |" in out and "about 0.6" in out


def ladder(switch: dict, seeds: int = 4) -> pd.DataFrame:
    """The p ladder's grid (rates 0.4..1 step 0.1): per (p, d) Pizza below its switch, Clock above."""
    parts = []
    for (p, width), at in switch.items():
        one = study({width: at}, seeds=seeds)
        parts.append(one[one["attn_rate"] >= 0.4].assign(p=p, steps=20000,
                                                          run_id=lambda f: [f"{p}-{width}-{i}" for i in range(len(f))]))
    return pd.concat(parts, ignore_index=True)


def test_the_p_ladder_verdict_says_which_reading_the_intervals_allow():
    # the switch follows d/p: 0.45 + 0.05 d/p, so at d = 128 it falls with p, at d/p ~ 2.2 it stays
    follows_ratio = {(p, d): 0.45 + 0.05 * d / p for p, d in
                     ((23, 128), (31, 128), (43, 128), (59, 128), (23, 52), (31, 68), (43, 96))}
    table, said = paper.ladder_verdict(ladder(follows_ratio), n_boot=100)
    rows = table.set_index("series")
    assert rows.loc["d = 128", "slope per doubling of p"] < -0.05 and rows.loc["d = 128", "p values"] == 4
    assert rows.loc["d/p ~ 2.17", "slope per doubling of p"] == pytest.approx(0, abs=1e-9)
    assert said.endswith("the intervals allow d/p (no slope at d/p ~ 2.17); they rule out width alone "
                         "(no slope at d = 128) and p alone (the same slope in both series).")
    # the switch set by the width alone: no slope at d = 128
    by_width = {key: 0.45 + 0.1 * np.log2(key[1] / 52) for key in follows_ratio}
    assert "allow width alone (no slope at d = 128); they rule out" in paper.ladder_verdict(ladder(by_width), n_boot=100)[1]


def test_the_ladder_figure_marks_a_boundary_beyond_the_rates_swept():
    """No crossing in 0.4..1: Clock from 0.4 on ('below') is a down triangle at 0.4, Pizza
    throughout ('above') an up triangle at 1, in both panels; a crossing is a point with its bar."""
    from phasescan.plots.diagrams import boundary_over_p
    points = paper.ladder_points(ladder({(23, 128): 1.2, (31, 128): 0.3, (59, 128): 0.65}), n_boot=50)
    rows = points[points["series"] == "d = 128"].set_index("p")
    assert list(rows["status"]) == ["above", "below", "crossing"]
    assert (rows["lowest rate"] == 0.4).all() and (rows["highest rate"] == 1.0).all()
    for ax in boundary_over_p(points).axes:
        marks = {line.get_marker(): list(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata())}
        assert marks["^"] == [1.0] and marks["v"] == [0.4] and marks["o"] == pytest.approx([0.65], abs=0.06)


def test_cli_paper_adds_a_study_at_its_own_grid(tmp_path, capsys):
    """--add: the p = 59 runs of another folder join the ladder at the ladder's rates; the
    comparison proper is on p = 59, the ladder verdict after the other three."""
    switch = {(23, 128): 0.85, (31, 128): 0.75, (23, 52): 0.65, (31, 68): 0.65}
    (tmp_path / "ladder").mkdir(), (tmp_path / "p59").mkdir()
    ladder(switch).to_parquet(tmp_path / "ladder" / "runs.parquet")
    fixed = study({128: 0.65}, seeds=4).assign(p=59, steps=20000, run_id=lambda f: [f"59-{i}" for i in range(len(f))])
    fixed.to_parquet(tmp_path / "p59" / "runs.parquet")
    assert report.main([str(tmp_path / "ladder"), "--paper", "--add", str(tmp_path / "p59")]) == 0
    out = capsys.readouterr().out
    assert f"With 28 runs of {tmp_path / 'p59'} (p = 59), those at this folder's attention rates and steps " \
           "(16 others left out)." in out
    assert "**Boundary per (p, d)**" in out and "*From here on, the runs at p = 59 only (28).*" in out
    assert "\n4. The p ladder (does the boundary follow p, d or d/p?)" in out
    assert report.main([str(tmp_path / "ladder"), "--add", str(tmp_path / "p59")]) == 2
    assert "--add goes with --paper" in capsys.readouterr().err
    # --figure: the boundary against p, both series (p = 59, d = 128 in both), both rules
    everything = paper.combined(tmp_path / "ladder", [tmp_path / "p59"])[0]
    points = paper.ladder_points(everything, n_boot=100)
    printed = paper.ladder_boundaries(everything, n_boot=100)  # the figure draws the table's own intervals
    drawn = points[points["series"] == "d = 128"].drop(columns=["series", "lowest rate", "highest rate"])
    pd.testing.assert_frame_equal(drawn.reset_index(drop=True),
                                  printed[printed["d_model"] == 128].reset_index(drop=True))
    assert sorted(map(tuple, points[["series", "p"]].to_numpy())) == [
        ("d = 128", 23), ("d = 128", 31), ("d = 128", 59), ("d/p ~ 2.17", 23), ("d/p ~ 2.17", 31), ("d/p ~ 2.17", 59)]
    figure = tmp_path / "ladder" / "figures" / "boundary_over_p.png"
    assert report.main([str(tmp_path / "ladder"), "--paper", "--add", str(tmp_path / "p59"),
                        "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 10_000 and f"-> {figure}" in capsys.readouterr().err
    assert report.main([str(tmp_path / "p59"), "--paper", "--figure", str(tmp_path / "one.png")]) == 2
    assert "--figure: the boundary against p needs several p" in capsys.readouterr().err
    assert not (tmp_path / "one.png").exists()
    assert report.main([str(tmp_path / "ladder"), "--paper", "--figure", str(tmp_path / "f.jpg")]) == 2
    assert "allowed .png, .pdf, .svg" in capsys.readouterr().err


def history(labels: dict[str, list[str]], grad_sym: dict[str, list[float]], every: int = 100) -> pd.DataFrame:
    rows = []
    for run_id, seq in labels.items():
        for j, (label, gs) in enumerate(zip(seq, grad_sym[run_id])):
            rows.append({"run_id": run_id, "step": j * every, "algorithm": label, "grad_sym": gs, "d_model": 16})
    return pd.DataFrame(rows)


def test_settling_steps_and_changed_share():
    hist = history({"a": ["unlearned", "pizza", "clock", "clock", "clock"],
                    "b": ["unlearned", "pizza", "pizza", "pizza", "pizza"],
                    "c": ["pizza", "clock", "pizza", "clock", "pizza"]},
                   {"a": [0.1, 0.5, 0.9, 0.95, 0.96], "b": [0.5] * 5, "c": [0.2, 0.3, 0.4, 0.5, 0.51]})
    runs = settling.per_run(hist).set_index("run_id")
    assert runs["label_settles"].to_dict() == {"a": 200, "b": 100, "c": 400}
    assert runs["grad_sym_settles"].to_dict() == {"a": 300, "b": 0, "c": 300}
    changed = settling.changed_share(hist, [100, 300, 400]).set_index("steps")
    assert changed.loc[100, "label_differs"] == 2 and changed.loc[300, "label_differs"] == 1
    assert changed.loc[400, "share_differs"] == 0
