"""The history and refinement figures are drawn from a results folder's tables."""
import numpy as np
import pandas as pd
from test_refine import coarse, synthetic_labeller

from phasescan.analysis import refine
from phasescan.plots import draw, training
from phasescan.store import history, results


def test_figures_from_tables(tmp_path):
    labeller = synthetic_labeller()
    cfg, frame = coarse(labeller, 2, "refinement.rounds=2", "refinement.budget=20")
    runs, table = refine.refine(frame, refine.options(cfg), labeller)
    rng = np.random.default_rng(0)
    steps = [0, 50, 100]
    hist = pd.DataFrame([{"run_id": r, "step": s, "algorithm": a if s == 100 else "unlearned",
                          "train_loss": 10.0 ** -rng.uniform(1, 7),
                          **{m: rng.random() for m in ("test_acc", "grad_sym", "dist_irr", "circularity")}}
                         for r, a in zip(runs["run_id"], runs["algorithm"]) for s in steps])
    runs.to_parquet(tmp_path / results.RUNS)
    hist.to_parquet(tmp_path / history.HISTORY)
    table.to_parquet(tmp_path / refine.REFINEMENT)
    paths = draw.draw_beyond(tmp_path, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["history_loss.png", "history_metrics.png", "history_phases.png",
                                             "history_settling.png",
                                                 "refinement.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert len(training.chosen_runs(history.load(tmp_path))) == 6
