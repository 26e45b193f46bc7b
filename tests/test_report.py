"""phasescan.report: a sweep's numbers per attention-rate bin and the transition's location."""
import numpy as np
import pandas as pd

from phasescan import report


def synthetic_runs(tmp_path, switch=0.55):
    """8 seeds per attention rate; Pizza (symmetric) below `switch`, Clock above."""
    rates = np.round(np.linspace(0, 1, 11), 2)
    rows = []
    for rate in rates:
        for seed in range(8):
            pizza = rate < switch
            rows.append({"attn_rate": rate, "d_model": 128, "seed": seed, "precision": "float32",
                         "algorithm": "pizza" if pizza else "clock",
                         "grad_sym": 0.99 if pizza else 0.3 + 0.01 * seed,
                         "dist_irr": 0.2 if pizza else 0.85,
                         "dist_irr_top_wrong": 0.25 if pizza else 0.83, "test_acc": 1.0,
                         "circularity": 0.999 if seed < 2 else 0.9,
                         "train_loss": 1.45e-7, "param_norm": 24.4,
                         "spike_loss": 2e-2 if seed == 0 else 9e-6})  # seed 0 spiked
    pd.DataFrame(rows).to_parquet(tmp_path / "runs.parquet")
    return tmp_path


def test_summary_bins_and_shares(tmp_path):
    runs = pd.read_parquet(synthetic_runs(tmp_path) / "runs.parquet")
    table = report.summary(runs, "attn_rate", min_circularity=0.6)
    assert len(table) == 11 and set(table["runs"]) == {8}
    first, last = table.iloc[0], table.iloc[-1]
    assert first["pizza"] == "1.00" and first["clock"] == "0.00" and last["clock"] == "1.00"
    assert first["grad_sym"].startswith("0.990") and first["circ>=0.995"] == "0.25"
    assert first["dist_irr_top_wrong"].startswith("0.250") and last["dist_irr_top_wrong"].startswith("0.830")
    assert first["train_loss"] == "1.45e-07" and first["param_norm"] == "24.4"
    assert first["spiking"] == "0.12"  # 1 of 8 seeds rose above the fit level again
    assert first["circ>=0.6"] == "1.00"


def test_transition_is_between_the_last_pizza_and_first_clock_rate(tmp_path):
    runs = pd.read_parquet(synthetic_runs(tmp_path, switch=0.55) / "runs.parquet")
    found = report.transitions(runs, "attn_rate", None, 0.9, n_boot=50).set_index("share")
    for share in ("pizza share", "grad_sym >= 0.9 share", "non-clock share"):
        assert 0.5 < found.loc[share, "boundary"] < 0.6  # the shares jump from 1 at 0.5 to 0 at 0.6
        assert found.loc[share, "status"] == "crossing"


def test_cli_prints_markdown_and_refuses_a_bad_axis(tmp_path, capsys):
    folder = synthetic_runs(tmp_path)
    assert report.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| attn_rate | runs | grad_sym |") and "non-clock share" in out
    assert report.main([str(folder), "--by", "width"]) == 2
    assert "width: not a column" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
