"""The committed CPU study (results/cpu/width_vs_attn, sweep=cpu_width_vs_attn) reproduces from
the code on main: one cell of its cheapest width is trained again from the folder's own
config.yaml and must give the committed rows.

The study trains in chunks of 4 models (sweep.chunk_size=4), each chunk one cell's 4 seeds, so
the cell trained here alone is compiled and batched exactly as in the study: on the same CPU
the rows come out bit for bit. A different CPU (another vector width, another XLA build) may
round matmuls differently, and 1000s of training steps amplify that, so the float metrics are
compared to rtol 1e-4 (plenty for a bit-identical run, tight against a real change of training)
and the labels exactly.
"""
import numpy as np
import yaml

import phasescan
from conftest import ROOT

STUDY = ROOT / "results" / "cpu" / "width_vs_attn"
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "grad_sym", "dist_irr", "dist_irr_top_wrong",
           "circularity", "param_norm"]


def test_the_committed_study_names_its_sweep_config():
    cfg = yaml.safe_load((STUDY / "config.yaml").read_text())
    assert cfg["sweep"]["name"] == "cpu_width_vs_attn"
    assert (ROOT / "phasescan" / "conf" / "sweep" / "cpu_width_vs_attn.yaml").is_file()


def test_one_cell_of_the_committed_study_trains_again_to_its_rows(tmp_path):
    committed = phasescan.load(STUDY)
    cfg = yaml.safe_load((STUDY / "config.yaml").read_text())
    assert cfg["sweep"]["chunk_size"] == cfg["sweep"]["seeds"]  # a cell is a chunk (docstring)
    width = int(committed["d_model"].min())
    cheapest = committed[committed["d_model"] == width]
    learned = cheapest[cheapest["algorithm"].isin(["pizza", "clock"])]
    rate = float((learned if len(learned) else cheapest)["attn_rate"].iloc[0])
    cfg["sweep"]["axes"] |= {"d_model": [width], "attn_rate": [rate]}
    cfg |= {"out_dir": str(tmp_path / "again"), "plot": False, "save_weights": "none", "tracking": "none"}
    again = phasescan.run(cfg).set_index("run_id").sort_index()
    cell = cheapest[np.isclose(cheapest["attn_rate"], rate)].set_index("run_id").sort_index()
    assert list(again.index) == list(cell.index) and len(cell) == cfg["sweep"]["seeds"]
    assert list(again["algorithm"]) == list(cell["algorithm"])
    np.testing.assert_allclose(again[METRICS].to_numpy(float), cell[METRICS].to_numpy(float), rtol=1e-4, atol=1e-9)
