"""Figures and the text phase table: drawn from a real tiny sweep and from synthetic tables."""
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose, run_cli
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from phasescan import plot
from phasescan.analysis import boundary, table
from phasescan.plots import diagrams, draw, inspection, style
from phasescan.store import results


def not_blank(path) -> bool:
    """A drawn figure has real content: its pixels vary (a blank canvas has ~zero variance)."""
    pixels = imread(path)[..., :3]
    return pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.002


def synthetic(truth: dict, seeds: int = 8, seed: int = 0, rates=None) -> pd.DataFrame:
    """Pizza below the true boundary, Clock above, with labels mixed near it; metrics to match."""
    rng = np.random.default_rng(seed)
    rows = []
    for width, b in truth.items():
        for x in np.round(np.linspace(0, 1, 11), 2) if rates is None else rates:
            for s in range(seeds):
                pizza = x < b if abs(x - b) > 0.08 else rng.random() < 0.5 - (x - b) * 5
                rows.append({"run_id": f"r{len(rows)}", "run_index": len(rows), "seed": s,
                             "d_model": width, "attn_rate": x, "lr": 1e-3,
                             "algorithm": "pizza" if pizza else "clock",
                             "grad_sym": rng.uniform(0.93, 1) if pizza else rng.uniform(0.3, 0.7),
                             "dist_irr": rng.uniform(0.1, 0.5) if pizza else rng.uniform(0.7, 1),
                             "circularity": rng.uniform(0.98, 1)})
    return pd.DataFrame(rows)


def write_table(folder, frame):
    frame.to_parquet(folder / results.RUNS, index=False)
    return folder


def test_boundary_of_a_synthetic_table_is_recovered_and_drawn(tmp_path):
    truth = {32: 0.3, 128: 0.55, 512: 0.8}
    paths = draw.draw(write_table(tmp_path, synthetic(truth)), inspect="none")
    bounds = pd.read_csv(tmp_path / "figures" / draw.BOUNDARY_CSV).set_index("d_model")
    for width, b in truth.items():
        assert bounds.loc[width, "status"] == "crossing"
        assert abs(bounds.loc[width, "boundary"] - b) < 0.07, (width, bounds.loc[width])
        assert bounds.loc[width, "lo"] <= bounds.loc[width, "boundary"] <= bounds.loc[width, "hi"]
    names = {p.name for p in paths}
    assert {"phase_diagram.png", "metric_heatmaps.png", "paper_scatter.png"} <= names
    assert all(not_blank(p) for p in paths if p.suffix == ".png")


def test_one_width_gives_a_1d_diagram_and_other_formats(tmp_path):
    paths = draw.draw(write_table(tmp_path, synthetic({64: 0.5})), formats=("png", "svg", "pdf"),
                      inspect="none", circular_only=True)
    assert {p.suffix for p in paths} == {".csv", ".png", ".svg", ".pdf"}
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix != ".csv")
    assert all(not_blank(p) for p in paths if p.suffix == ".png")
    assert len(pd.read_csv(tmp_path / "figures" / draw.BOUNDARY_CSV)) == 1


def test_text_table_cells_and_legend():
    frame = synthetic({32: 0.3, 128: 0.8}, seeds=4)
    frame.loc[frame["attn_rate"] == 1.0, "algorithm"] = ["clock", "clock", "clock", "other"] * 2
    text = table.format_table(frame)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["d_model", "\\", "attn_rate"]
    assert lines[1].split()[0] == "32" and lines[2].split()[0] == "128"
    assert lines[1].endswith("C 3/4") and "P 4/4" in lines[1]  # rows are widths, last column x = 1
    assert "C clock" in lines[-1] and "P pizza" in lines[-1]
    frame.loc[frame.index % 2 == 0, "lr"] = 3e-3  # a third swept axis is pooled, and said so
    assert "pooled over lr" in table.format_table(frame)


def test_bad_axis_is_one_short_error(tmp_path, capsys):
    write_table(tmp_path, synthetic({32: 0.5}, seeds=2))
    assert plot.main([str(tmp_path), "x=width"]) == 2
    err = capsys.readouterr().err
    assert "x=width: not a field" in err and "attn_rate" in err and "Traceback" not in err
    assert (tmp_path / results.RUNS).is_file()


def test_an_unswept_axis_is_refused_and_other_axes_write_beside_the_defaults(tmp_path, capsys):
    write_table(tmp_path, synthetic({32: 0.3, 128: 0.6}, seeds=3))
    assert plot.main([str(tmp_path), "x=lr", "--no-inspect"]) == 2  # lr is a column, not swept
    assert "x=lr: not swept" in capsys.readouterr().err and not (tmp_path / "figures").exists()
    assert plot.main([str(tmp_path), "--no-inspect"]) == 0
    before = (tmp_path / "figures" / "phase_diagram.png").read_bytes()
    assert plot.main([str(tmp_path), "x=d_model", "y=attn_rate", "--no-inspect"]) == 0
    figures = tmp_path / "figures"
    assert (figures / "phase_diagram_d_model-attn_rate.png").is_file()
    assert (figures / "phase_diagram.png").read_bytes() == before  # the default figure untouched
    swapped = pd.read_csv(figures / "boundary_d_model-attn_rate.csv")
    assert set(swapped["x_axis"]) == {"d_model"} and set(swapped["y_axis"]) == {"attn_rate"}


def test_every_figure_from_a_tiny_sweep(tmp_path):
    """The end-of-sweep figures (plot=true) and the single-model inspection from saved weights."""
    out = tmp_path / "sweep"
    proc = run_cli(*TINY, "plot=true", "save_weights=1", f"out_dir={out}")
    assert "C clock, P pizza" in proc.stdout  # the text phase table
    figures = out / "figures"
    for name in ("phase_diagram.png", "metric_heatmaps.png", "paper_scatter.png",
                 "metric_distributions.png"):
        assert not_blank(figures / name), name
    assert (figures / draw.BOUNDARY_CSV).is_file()
    frame = results.load(out)
    run_id = frame.loc[frame["seed"] == 0, "run_id"].iloc[0]  # seed 0: weights saved
    assert plot.main([str(out), "--runs", run_id, "--formats", "png"]) == 0
    assert not_blank(figures / f"inspect_{run_id}.png")


def test_inspection_picks_the_most_clock_and_pizza_like_runs(tmp_path):
    frame = synthetic({32: 0.5}, seeds=2)
    frame.loc[3, ["grad_sym", "dist_irr"]] = [1.0, 0.0]  # the most Pizza-like
    frame.loc[20, ["grad_sym", "dist_irr"]] = [0.0, 1.0]  # the most Clock-like
    frame.loc[21, ["grad_sym", "dist_irr", "algorithm"]] = [0.0, 1.0, "unlearned"]  # not a model
    assert inspection.pick_runs(frame, saved_only=False, out_dir=tmp_path) == ["r20", "r3"]
    assert inspection.pick_runs(frame, saved_only=True, out_dir=tmp_path) == []  # no weights here


def test_models_whose_weights_were_not_kept_are_trained_again_with_their_chunk_bit_for_bit(tmp_path, capsys):
    """load_model of a row whose weights the sweep did not keep (and the inspection figures and
    evaluate, through retrain.load_or_retrain) trains it again with its chunk-mates, in a program
    of the sweep's size (a line says so): on the same CPU the kept model bit for bit, its metrics
    the row's and its label the row's; kept in weights/retrained/ so it happens once."""
    import shutil

    import json

    import phasescan
    from phasescan import evaluate
    from phasescan.runner import retrain
    from phasescan.runner.evaluate import evaluate_arrays
    from phasescan.runner.sweep import run_sweep

    out = tmp_path / "sweep"
    frame = run_sweep(compose(*TINY, "save_weights=all", "sweep.chunk_size=2"), out)  # 4 runs, 2 chunks
    ids = list(frame["run_id"])
    kept = retrain.load_or_retrain(out, ids)
    assert "training" not in capsys.readouterr().err  # all kept: nothing trained
    bare = tmp_path / "without-weights"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("weights"))
    assert retrain.chunk_plan(bare, ids[1]).size == 2
    model = phasescan.load_model(bare, run_id=ids[1][:6])  # one run: its chunk (ids 0 and 1) trains
    assert "training 2 again in their 1 chunk(s) as the sweep did" in capsys.readouterr().err
    assert kept[1].keys() == model.arrays.keys()
    for name in kept[1]:
        assert np.array_equal(model.arrays[name], kept[1][name]), name
    row, measured = frame.iloc[1], evaluate_arrays(model.arrays, ["metrics.grad_sym_triples=50"])  # TINY's
    assert measured["algorithm"] == row["algorithm"]
    for name in ("train_loss", "test_acc", "grad_sym", "dist_irr", "circularity", "param_norm"):
        assert measured[name] == pytest.approx(row[name], rel=1e-6, abs=1e-6), name
    # its chunk-mate came for free; kept apart from the sweep's own weights: no second training
    assert sorted(p.stem for p in (bare / "weights" / "retrained").glob("*.npz")) == sorted(ids[:2])
    retrain.load_or_retrain(bare, ids[:2])
    assert "training" not in capsys.readouterr().err
    # evaluate --runs: the same path; the other chunk trains, every row measured as the sweep did
    assert evaluate.main([str(bare), "--runs", f"{ids[1]},{ids[3][:6]}"]) == 0
    captured = capsys.readouterr()
    assert "training 2 again in their 1 chunk(s)" in captured.err
    for line, i in zip(captured.out.splitlines(), (1, 3)):
        measured, row = json.loads(line), frame.iloc[i]
        assert measured["run_id"] == row["run_id"] and measured["algorithm"] == row["algorithm"]
        for name in ("train_loss", "test_acc", "grad_sym", "dist_irr", "circularity", "param_norm"):
            assert measured[name] == pytest.approx(row[name], rel=1e-6, abs=1e-6), name
    saved = phasescan.load_model(model.save(tmp_path / "opened.npz"))  # LoadedModel.save: the .npz layout
    assert all(np.array_equal(saved.arrays[name], kept[1][name]) for name in kept[1])


# ---------------------------------------------------------------- figure details

def test_1d_diagram_axis_holds_the_bars_and_no_more():
    p59_rates = [0.0, 0.2, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0]  # 13: every bar labelled
    for rates in ([0.0, 0.5, 1.0], list(np.round(np.linspace(0, 1, 11), 2)), p59_rates):
        frame = synthetic({64: 0.5}, seeds=8, rates=rates)
        fig = diagrams.phase_diagram(frame, "attn_rate", "d_model", [], boundary.estimate(frame))
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        bars = [b for b in ax.patches if isinstance(b, Rectangle) and b.get_width() > 0]
        assert bars and all(lo <= b.get_x() and b.get_x() + b.get_width() <= hi for b in bars)
        left = min(b.get_x() for b in bars)
        right = max(b.get_x() + b.get_width() for b in bars)
        assert left - lo < 0.15 and hi - right < 0.15  # a small margin, no empty room
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [table.short(r) for r in rates]  # ticks are the swept values, nothing else
        assert all(0 <= t <= len(rates) - 1 for t in ax.get_xticks())


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_legend_says_n_too_small_instead_of_an_interval():
    for seeds, width in ((2, {64: 0.5}), (2, {32: 0.4, 64: 0.6})):
        frame = synthetic(width, seeds=seeds)
        assert (boundary.estimate(frame)["status"] == "crossing").any()
        texts = legend_texts(diagrams.phase_diagram(frame, "attn_rate", "d_model", [], boundary.estimate(frame)))
        assert any("n too small" in t and "2 runs per cell" in t for t in texts), texts
        assert "95% CI" not in texts and not any("bars: 95% CI" in t for t in texts)
    frame = synthetic({64: 0.5}, seeds=8)  # enough runs: the interval is drawn and named
    texts = legend_texts(diagrams.phase_diagram(frame, "attn_rate", "d_model", [], boundary.estimate(frame)))
    assert "95% CI" in texts and not any("n too small" in t for t in texts)


def test_heatmap_cells_without_a_learned_run_are_masked():
    frame = synthetic({32: 0.3, 128: 0.8}, seeds=2)
    frame.loc[(frame["d_model"] == 32) & (frame["attn_rate"] == 1.0), "algorithm"] = "unlearned"
    fig = diagrams.metric_heatmaps(frame, "attn_rate", "d_model", [])
    for ax in fig.axes[:2]:  # the two heat maps (then their colour bars)
        positions = {(round(t.get_position()[0]), round(t.get_position()[1])) for t in ax.texts}
        assert len(ax.texts) == 21 and (10, 0) not in positions and (10, 1) in positions
        hatched = [p for p in ax.patches if p.get_hatch()]
        assert len(hatched) == 1 and hatched[0].get_xy() == (9.5, -0.5)
    assert "no learned run" in fig.texts[0].get_text()  # the suptitle says what hatching means
    # 1-D: a gap in the medians, hatched
    one = frame[frame["d_model"] == 32]
    ax = diagrams.metric_heatmaps(one, "attn_rate", "d_model", []).axes[0]
    assert np.isnan(ax.lines[0].get_ydata()[-1]) and np.isfinite(ax.lines[0].get_ydata()[0])
    assert any(p.get_hatch() for p in ax.patches)


def test_pooled_axes_are_named_with_their_values_in_titles():
    frame = synthetic({32: 0.3, 128: 0.8}, seeds=2)
    frame.loc[frame.index % 2 == 0, "lr"] = 3e-3
    assert diagrams.pooled_note(["lr"], frame) == "; pooled over lr = 0.001, 0.003"
    many = pd.DataFrame({"attn_rate": np.linspace(0, 1, 21)})
    assert style.pooled_values(many, ["attn_rate"]) == "attn_rate = 0, 0.05, 0.1, 0.15, ..., 1 (21 values)"


def test_a_sweep_over_p_gets_its_diagrams_boundaries_and_phase_table_per_p(tmp_path):
    """Another p is another task: the p ladder's d = 128 rows of two p are never pooled."""
    small, large = synthetic({52: 0.7, 128: 0.3}, seeds=4, seed=1), synthetic({68: 0.5, 128: 0.8}, seeds=4, seed=2)
    frame = pd.concat([small.assign(p=23), large.assign(p=31)], ignore_index=True)
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    frame = frame.assign(precision="float32", dist_irr_top_wrong=frame["dist_irr"], test_acc=1.0,
                         train_loss=1.45e-7, param_norm=24.4, spike_loss=9e-6)  # what the HTML report reads
    paths = draw.draw(write_table(tmp_path, frame), inspect="none")
    names = {p.name for p in paths}
    assert {"phase_diagram_p23.png", "phase_diagram_p31.png", "metric_heatmaps_p31.png"} <= names
    assert "phase_diagram.png" not in names
    bounds = pd.read_csv(tmp_path / "figures" / draw.BOUNDARY_CSV).set_index(["p", "d_model"])
    assert list(bounds.index) == [(23, 52), (23, 128), (31, 68), (31, 128)]
    for (p, width), b in {(23, 128): 0.3, (31, 128): 0.8}.items():  # each p's own, not their pool's
        assert abs(bounds.loc[(p, width), "boundary"] - b) < 0.07, (p, width)
    lines = table.format_table(frame).splitlines()
    assert lines[0].startswith("p, d_model \\ attn_rate")
    assert [line.split("  ")[0] for line in lines[1:5]] == ["p 23, 52", "p 23, 128", "p 31, 68", "p 31, 128"]
    assert "pooled" not in lines[-1]
    assert diagrams.pooled_note(["p"], frame[frame["p"] == 23]) == "; p = 23"
    from phasescan.reports import html
    page = html.html_report(tmp_path)  # the same per p: its phase table, boundary table and figures
    assert "<th>p 23, 52</th>" in page and 'id="fig-phase_diagram_p31"' in page
    assert 'id="fig-phase_diagram"' not in page
