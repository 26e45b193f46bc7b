"""What every figure shares: one colour per class, axis names, the matplotlib style."""
from __future__ import annotations

from ..analysis.table import short
from ..core.classify import ALGORITHMS, LEARNING_PHASES

# Okabe-Ito, one fixed colour per class (colour-blind safe).
COLORS = {"clock": "#0072B2", "pizza": "#E69F00", "mixed": "#D55E00", "other": "#CC79A7",
          "non_circular": "#009E73",
          "unlearned": "#BBBBBB", "diverged": "#000000"}
assert set(COLORS) == set(ALGORITHMS)
# The learning phases' own colours, none an algorithm's, so the two diagrams are never confused
# (sky blue and yellow from Okabe-Ito, greys for the phases that never generalise).
PHASE_COLORS = {"comprehension": "#56B4E9", "grokking": "#F0E442", "memorization": "#999999",
                "confusion": "#E0D0F0", "diverged": "#000000"}
assert set(PHASE_COLORS) == set(LEARNING_PHASES)
CLASS_COLORS = {"algorithm": COLORS, "learning_phase": PHASE_COLORS}
LABELS = {"attn_rate": "attention rate", "d_model": "width d_model", "lr": "learning rate",
          "weight_decay": "weight decay", "train_frac": "train fraction", "n_heads": "heads",
          "n_layers": "layers", "grad_sym": "gradient symmetricity",
          "dist_irr": "distance irrelevance (correct logit)",
          "dist_irr_top_wrong": "distance irrelevance (largest wrong logit)",
          "init_scale": "initialisation scale", "learning_phase": "learning phase"}
LOG_AXES = {"d_model", "lr", "weight_decay", "batch_size", "init_scale"}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "savefig.dpi": 150, "figure.dpi": 100}


def label(name: str) -> str:
    return LABELS.get(name, name)


# Colours of lines that are not classes (Okabe-Ito as well).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]


def pooled_values(frame, axes: list[str], most: int = 6) -> str:
    """The swept axes a figure or table pools, with their values: `d_model = 32, 64; lr = ...`
    (long lists shortened to their first values, `...`, the last and the count)."""
    parts = []
    for axis in axes:
        values = [short(v) for v in sorted(frame[axis].dropna().unique())]
        if frame[axis].isna().any():
            values.append("None")
        if len(values) > most:
            values = values[:most - 2] + ["...", values[-1], f"({len(values)} values)"]
        parts.append(f"{axis} = {', '.join(values)}".replace(", (", " ("))
    return "; ".join(parts)
