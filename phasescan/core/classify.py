"""The classification rule: each model gets one of clock, pizza, mixed, other, non_circular,
unlearned, diverged, and each of its circles one of clock, pizza, unclear. Thresholds come from
the config group `classify` (conf/classify/default.yaml), never from code; docs/metrics.md
explains where each one sits and why.

A circle (metrics.circle_metrics: the network run on one frequency of the embedding) is
  clock     circle_clock_fve >= circle_min_fve and exceeds circle_pizza_fve by >= circle_margin
  pizza     the same with the two templates exchanged
  unclear   otherwise

The model, first match wins:
  diverged      non-finite loss or weights
  unlearned     test_acc < min_test_acc (acc when there is no test set)   (did not generalise)
  non_circular  circularity < min_circularity            (no clean circle in the embedding)
  mixed         at least one Pizza circle and at least one Clock circle
  pizza         grad_sym >= pizza_min_grad_sym and dist_irr <= pizza_max_dist_irr
  clock         grad_sym <= clock_max_grad_sym and dist_irr >= clock_min_dist_irr
  pizza / clock the circles settle the rest: every clear circle is Pizza (Clock), at least one
  other         everything else (disagreeing metrics, no clear circle)
Without circle columns (tables from before them) or circle thresholds, the circle steps are
skipped.

Beside the algorithm, each trained model gets a learning phase (Liu et al., "Towards
Understanding Grokking", NeurIPS 2022) from its dynamics columns (train.DynamicsState: the
first steps with train / test accuracy >= min_test_acc), first match wins:
  diverged       non-finite loss or weights
  confusion      never memorised: memorize_step = -1
  memorization   memorised, never generalised within the run: generalize_step = -1
  grokking       generalised more than grokking_delay steps after memorising
  comprehension  otherwise (generalised at most grokking_delay steps after memorising)
Without test pairs (train_frac = 1) generalisation is judged on the train pairs, which are then
all pairs (as the algorithm's rule judges it on `acc`): a model that memorised comprehends.
Neither label reads the other.
"""
from __future__ import annotations

import numpy as np

# classify.grokking_delay's default (conf/classify/default.yaml; docs/metrics.md says why).
GROKKING_DELAY = 200

ALGORITHMS = ("clock", "pizza", "mixed", "other", "non_circular", "unlearned", "diverged")
LEARNING_PHASES = ("comprehension", "grokking", "memorization", "confusion", "diverged")
THRESHOLDS = ("min_test_acc", "min_circularity", "pizza_min_grad_sym", "pizza_max_dist_irr",
              "clock_max_grad_sym", "clock_min_dist_irr", "circle_min_fve", "circle_margin",
              "grokking_delay")
CIRCLE_THRESHOLDS = ("circle_min_fve", "circle_margin")
STEP_THRESHOLDS = ("grokking_delay",)  # in optimizer steps (the others are in [0, 1])
# Thresholds added after folders were first written, with their default: a folder's sweep
# identity leaves them out at that value (`identity`), so folders from before them resume.
ADDED_THRESHOLDS = {"grokking_delay": GROKKING_DELAY}


def identity(thresholds: dict) -> dict:
    """The thresholds that make two sweeps different: all of them but one added later at its
    default (runner.sweep.sweep_identity)."""
    return {k: v for k, v in thresholds.items()
            if not (k in ADDED_THRESHOLDS and v == ADDED_THRESHOLDS[k])}


def circle_matrix(values) -> np.ndarray:
    """Per-model circle values as a float matrix (models, circles), NaN where a model has fewer:
    from the engine's arrays, or from a table's list column."""
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype.kind == "f":
        return values.astype(float)
    rows = [np.asarray(v if v is not None else [], dtype=float) for v in values]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def circle_algorithms(clock_fve, pizza_fve, thresholds: dict) -> np.ndarray:
    """Each circle's label (models, circles); "" where a model has no such circle."""
    clock, pizza = circle_matrix(clock_fve), circle_matrix(pizza_fve)
    least, margin = thresholds["circle_min_fve"], thresholds["circle_margin"]
    labels = np.where((clock >= least) & (clock - pizza >= margin), "clock",
                      np.where((pizza >= least) & (pizza - clock >= margin), "pizza", "unclear"))
    return np.where(np.isnan(clock) | np.isnan(pizza), "", labels).astype(object)


def learning_phase(metrics, thresholds: dict) -> np.ndarray:
    """Every model's learning phase from its dynamics columns (module docstring); None for a row
    without them (a table from before the dynamics)."""
    delay = thresholds.get("grokking_delay", ADDED_THRESHOLDS["grokking_delay"])
    memorize = np.asarray(metrics["memorize_step"], dtype=float)
    generalize = np.asarray(metrics["generalize_step"], dtype=float)
    diverged = np.asarray(metrics["diverged"], dtype=bool)
    no_test = np.isnan(np.asarray(metrics["test_acc"], dtype=float)) & ~diverged  # train_frac = 1
    generalize = np.where(no_test, memorize, generalize)
    conditions = [diverged, memorize < 0, generalize < 0, generalize - memorize > delay]
    labels = ["diverged", "confusion", "memorization", "grokking"]
    phases = np.select(conditions, labels, default="comprehension").astype(object)
    phases[np.isnan(memorize) & ~diverged] = None
    return phases


def classify(metrics, thresholds: dict) -> np.ndarray:
    """Label every model; `metrics` maps names to equal-length arrays (or a DataFrame)."""
    missing = [k for k in THRESHOLDS if k not in thresholds and k not in CIRCLE_THRESHOLDS
               and k not in ADDED_THRESHOLDS]
    if missing:
        raise KeyError(f"classify thresholds missing: {', '.join(missing)}")
    t = thresholds
    gs = np.asarray(metrics["grad_sym"], dtype=float)
    di = np.asarray(metrics["dist_irr"], dtype=float)
    test_acc = np.asarray(metrics["test_acc"], dtype=float)
    if "acc" in metrics:  # no test pairs (train_frac = 1): judge generalisation on all pairs
        test_acc = np.where(np.isnan(test_acc), np.asarray(metrics["acc"], dtype=float), test_acc)
    n_clock = n_pizza = np.zeros(len(gs), int)
    if "circle_clock_fve" in metrics and all(k in t for k in CIRCLE_THRESHOLDS):
        circles = circle_algorithms(metrics["circle_clock_fve"], metrics["circle_pizza_fve"], t)
        n_clock, n_pizza = (circles == "clock").sum(axis=1), (circles == "pizza").sum(axis=1)
    conditions = [
        np.asarray(metrics["diverged"], dtype=bool),
        ~(test_acc >= t["min_test_acc"]),
        ~(np.asarray(metrics["circularity"], dtype=float) >= t["min_circularity"]),
        (n_pizza > 0) & (n_clock > 0),
        (gs >= t["pizza_min_grad_sym"]) & (di <= t["pizza_max_dist_irr"]),
        (gs <= t["clock_max_grad_sym"]) & (di >= t["clock_min_dist_irr"]),
        (n_pizza > 0) & (n_clock == 0),
        (n_clock > 0) & (n_pizza == 0),
    ]
    labels = ["diverged", "unlearned", "non_circular", "mixed", "pizza", "clock", "pizza", "clock"]
    return np.select(conditions, labels, default="other").astype(object)
