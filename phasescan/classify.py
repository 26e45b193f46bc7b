"""The classification rule: each model gets one of clock, pizza, other, non_circular, unlearned,
diverged. Thresholds come from the config group `classify` (conf/classify/default.yaml), never
from code; docs/metrics.md explains where each one sits and why.

The rule, first match wins:
  diverged      non-finite loss or weights
  unlearned     test_acc < min_test_acc                  (did not generalise)
  non_circular  circularity < min_circularity            (no clean circle in the embedding)
  pizza         grad_sym >= pizza_min_grad_sym and dist_irr <= pizza_max_dist_irr
  clock         grad_sym <= clock_max_grad_sym and dist_irr >= clock_min_dist_irr
  other         everything else (mixtures, disagreeing metrics)
"""
from __future__ import annotations

import numpy as np

ALGORITHMS = ("clock", "pizza", "other", "non_circular", "unlearned", "diverged")
THRESHOLDS = ("min_test_acc", "min_circularity", "pizza_min_grad_sym", "pizza_max_dist_irr",
              "clock_max_grad_sym", "clock_min_dist_irr")


def classify(metrics: dict, thresholds: dict) -> np.ndarray:
    """Label every model; `metrics` maps names to equal-length arrays (or a DataFrame)."""
    missing = [k for k in THRESHOLDS if k not in thresholds]
    if missing:
        raise KeyError(f"classify thresholds missing: {', '.join(missing)}")
    t = thresholds
    gs = np.asarray(metrics["grad_sym"], dtype=float)
    di = np.asarray(metrics["dist_irr"], dtype=float)
    conditions = [
        np.asarray(metrics["diverged"], dtype=bool),
        ~(np.asarray(metrics["test_acc"], dtype=float) >= t["min_test_acc"]),
        ~(np.asarray(metrics["circularity"], dtype=float) >= t["min_circularity"]),
        (gs >= t["pizza_min_grad_sym"]) & (di <= t["pizza_max_dist_irr"]),
        (gs <= t["clock_max_grad_sym"]) & (di >= t["clock_min_dist_irr"]),
    ]
    labels = ["diverged", "unlearned", "non_circular", "pizza", "clock"]
    return np.select(conditions, labels, default="other").astype(object)
