import numpy as np
import pandas as pd

from phasescan.analysis import boundary


def synthetic(true_boundary: dict, seeds: int = 12, seed: int = 0) -> pd.DataFrame:
    """Pizza below the true boundary, Clock above, with 10% of labels flipped near it."""
    rng = np.random.default_rng(seed)
    rows = []
    for width, b in true_boundary.items():
        for x in np.linspace(0, 1, 21):
            for s in range(seeds):
                pizza = x < b if abs(x - b) > 0.08 else rng.random() < 0.5 - (x - b) * 5
                rows.append({"d_model": width, "attn_rate": x, "seed": s,
                             "algorithm": "pizza" if pizza else "clock"})
    return pd.DataFrame(rows)


def test_recovers_a_known_boundary():
    truth = {32: 0.5, 128: 0.62, 512: 0.9}
    table = boundary.estimate(synthetic(truth), n_boot=200).set_index("d_model")
    for width, b in truth.items():
        row = table.loc[width]
        assert row["status"] == "crossing"
        assert abs(row["boundary"] - b) < 0.06, (width, row["boundary"])
        assert row["lo"] <= row["boundary"] <= row["hi"]
        assert row["hi"] - row["lo"] < 0.2


def test_no_crossing_is_reported_not_invented():
    runs = synthetic({64: 2.0}, seeds=4)  # Pizza everywhere
    row = boundary.estimate(runs, n_boot=50).iloc[0]
    assert row["status"] == "above" and np.isnan(row["boundary"])
