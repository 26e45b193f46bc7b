"""`python -m phasescan.evaluate WEIGHTS.npz [MORE.npz | FOLDER ...] [OVERRIDES]`: measure and
label models trained anywhere.

One file: prints ONE JSON object (grad_sym, dist_irr, circularity, acc, key_freqs, clock_fve,
pizza_fve, algorithm, ...). Several files, or a folder (its .npz files, or a results folder's
weights/): one JSON object per line (JSON Lines), each with its "file"; `--table OUT.parquet`
(or .csv) also writes them as one table. The weights use the interchange layout of
docs/weights-format.md. If a file holds `train_frac` and `data_seed` the model's own train/test
split is rebuilt; otherwise accuracy and loss are over all p^2 pairs and test_* are null (the
label then uses `acc`). Overrides (`key=value`) set the measurement, e.g.
metrics.grad_sym_triples=all.

`--runs ID,ID` with one results folder measures those rows, kept weights or not: a row whose
weights the sweep did not keep is trained again with its chunk, as `phasescan.load_model` and
the figures do (on the same CPU bit for bit the row's model; kept in weights/retrained/), and
measured as its sweep measured it (the folder's metrics and classify settings, then the
overrides). One JSON line per run, each with its "run_id".

  python -m phasescan.evaluate results/cpu/width_vs_attn/weights/0765303a5537.npz
  python -m phasescan.evaluate results/cpu/width_vs_attn --table /tmp/models.parquet
  python -m phasescan.evaluate results/cpu/width_vs_attn --runs cb84038c9e43
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .engine.chunk import memory_problem
from .engine.train import Spec
from .runner import retrain
from .runner.evaluate import evaluate_arrays
from .runner.loaded import choices
from .core import grid
from .core.config import compose
from .store import results, weights


def check_overrides(overrides: list[str]) -> list[str]:
    """Problems of the measurement's overrides, found as a sweep's are (unknown keys, ranges)."""
    from .overrides import unknown_names
    from .core.config import check_options

    kept, problems = unknown_names(list(overrides))
    try:
        problems += check_options(compose(*kept))
    except Exception as error:  # Hydra's own errors (syntax, types): one line
        problems.append(f"{' '.join(kept)}: {str(error).splitlines()[0]}")
    return problems


def weight_files(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """The .npz files named by `inputs` (files, folders of .npz files, results folders with a
    weights/ folder), in the order given (a folder's sorted), and a problem per input without any."""
    files, problems = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            folder = path / "weights" if (path / "weights").is_dir() else path
            found = sorted(f for f in folder.glob("*.npz") if not results.is_temporary(f))
            if not found:
                problems.append(f"{name}: no .npz files (expected weights files, or a results folder "
                                "whose weights/ holds some: save_weights=all or =K)")
            files += found
        elif path.is_file() or path.suffix == ".npz":  # a missing .npz: weights.load names it
            files.append(path)
        else:
            problems.append(f"{name}: no such file or folder")
    return files, problems


def folder_measurement(folder: Path) -> list[str]:
    """Overrides that measure as a results folder's sweep did: its metrics and classify settings."""
    cfg = results.read_config(folder)
    return [f"{section}.{key}={'null' if value is None else value}"
            for section in ("metrics", "classify") for key, value in cfg.get(section, {}).items()]


def folder_runs(inputs: list[str], runs: str) -> tuple[Path | None, list[str], list[str]]:
    """`--runs`: the one results folder, its run_ids (unique prefixes allowed), and problems."""
    if len(inputs) != 1 or not (Path(inputs[0]) / results.RUNS).is_file():
        return None, [], [f"--runs needs one results folder (holding {results.RUNS}), got: {' '.join(inputs) or 'none'}"]
    folder = Path(inputs[0])
    table = results.read_table(folder / results.RUNS)["run_id"].astype(str)
    ids, problems = [], []
    for prefix in [r for r in runs.split(",") if r]:
        matches = sorted(table[table.str.startswith(prefix)])
        if len(matches) == 1:
            ids.append(matches[0])
        else:
            problems.append(f"--runs {prefix}: {'ambiguous' if matches else 'no such run_id'} in {folder}"
                            + (f" ({choices(folder, matches[:8])}{' ...' if len(matches) > 8 else ''})"
                               if matches else ""))
    return folder, ids, problems or ([] if ids else ["--runs: no run_id given"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="WEIGHTS_OR_FOLDER | OVERRIDE",
                        help="weights .npz files or folders, then config overrides for the measurement "
                             "(key=value, e.g. metrics.grad_sym_triples=all)")
    parser.add_argument("--table", type=Path, metavar="OUT.parquet|OUT.csv",
                        help="also write every model's row into one table")
    parser.add_argument("--runs", metavar="ID,ID", help="with one results folder: measure these rows, "
                        "training again (with their chunk, once) those whose weights were not kept")
    args = parser.parse_intermixed_args(argv)  # files, flags and overrides in any order
    overrides = [a for a in args.inputs if "=" in a]
    if args.runs is not None:
        return measure_rows(args, overrides)
    files, problems = weight_files([a for a in args.inputs if "=" not in a])
    if not files and not problems:
        problems.append("no weights file given (WEIGHTS.npz or a folder)")
    problems += table_problems(args.table) + check_overrides(overrides)
    loaded = {}
    for path in files:
        try:
            arrays = weights.load(path)
        except weights.UnreadableWeights as error:
            problems.append(f"cannot read {error}")
            continue
        found = [f"{path}: {problem}" for problem in weights.check(arrays)]
        if not found:
            run = grid.with_forward(grid.base_fields(compose()) | weights.shape_fields(arrays))
            memory = memory_problem(Spec.from_run(run))
            found += [f"{path}: {memory}"] if memory else []
        problems += found
        loaded[path] = arrays
    if problems:
        return refuse(problems)
    rows = []
    for path, arrays in loaded.items():
        row = evaluate_arrays(arrays, overrides)
        rows.append(row if len(files) == 1 and not args.table else {"file": str(path)} | row)
        print(json.dumps(rows[-1]), flush=True)
    return write_table(args.table, rows)


def measure_rows(args, overrides: list[str]) -> int:
    """`--runs`: the rows of one results folder, measured as its sweep measured them."""
    folder, run_ids, problems = folder_runs([a for a in args.inputs if "=" not in a], args.runs)
    problems += table_problems(args.table) + check_overrides(overrides)
    if problems:
        return refuse(problems)
    measurement = folder_measurement(folder) + overrides  # the user's last: they win
    rows = []
    for run_id, arrays in zip(run_ids, retrain.load_or_retrain(folder, run_ids)):
        rows.append({"run_id": run_id} | evaluate_arrays(arrays, measurement))
        print(json.dumps(rows[-1]), flush=True)
    return write_table(args.table, rows)


def refuse(problems: list[str]) -> int:
    """Every problem, one line each, before anything is measured or trained; exit status 2."""
    print("phasescan.evaluate: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]),
          file=sys.stderr)
    return 2


def table_problems(path: Path | None) -> list[str]:
    return [f"--table {path}: must end in .parquet or .csv"] if path and path.suffix not in (".parquet", ".csv") else []


def write_table(path: Path | None, rows: list[dict]) -> int:
    """`--table`: every printed row into one Parquet or CSV file."""
    if path:
        import pandas as pd
        frame = pd.DataFrame(rows)
        write = (lambda tmp: frame.to_parquet(tmp, index=False)) if path.suffix == ".parquet" \
            else (lambda tmp: frame.to_csv(tmp, index=False))
        results.write_atomic(path, write)
        print(f"phasescan.evaluate: {len(rows)} models -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
