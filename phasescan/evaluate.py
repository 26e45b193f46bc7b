"""`python -m phasescan.evaluate WEIGHTS.npz`: measure and label a model trained anywhere.

Prints ONE JSON object (grad_sym, dist_irr, circularity, acc, key_freqs, clock_fve, pizza_fve,
algorithm, ...). The weights use the interchange layout of docs/weights-format.md. If the file
holds `train_frac` and `data_seed` the model's own train/test split is rebuilt; otherwise
accuracy and loss are over all p^2 pairs and test_* are null (the label then uses `acc`).
"""
from __future__ import annotations

import argparse
import json
import sys

from .engine.chunk import memory_problem
from .engine.train import Spec
from .runner.evaluate import evaluate_arrays
from .spec import grid
from .spec.config import compose
from .store import weights


def check_overrides(overrides: list[str]) -> list[str]:
    """Problems of the measurement's overrides, found as a sweep's are (unknown keys, ranges)."""
    from .overrides import unknown_names
    from .spec.config import check_options

    kept, problems = unknown_names(list(overrides))
    try:
        problems += check_options(compose(*kept))
    except Exception as error:  # Hydra's own errors (syntax, types): one line
        problems.append(f"{' '.join(kept)}: {str(error).splitlines()[0]}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a .npz file in the interchange layout")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for the measurement, e.g. metrics.grad_sym_triples=all")
    args = parser.parse_args(argv)
    problems = check_overrides(args.overrides)
    try:
        arrays = weights.load(args.weights)
    except weights.UnreadableWeights as error:
        problems.append(f"cannot read {error}")
        arrays = None
    if arrays is not None:
        problems += [f"{args.weights}: {problem}" for problem in weights.check(arrays)]
    if arrays is not None and not problems:
        memory = memory_problem(Spec.from_run(grid.base_fields(compose()) | weights.shape_fields(arrays)))
        problems += [memory] if memory else []
    if problems:
        print("phasescan.evaluate: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]),
              file=sys.stderr)
        return 2
    print(json.dumps(evaluate_arrays(arrays, args.overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
