"""Every figure of a results folder drawn into its figures/ folder (`draw`), or the sweep
figures in memory (`summary_figures`, phasescan.figures)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..analysis import boundary, refine, stability, table
from ..runner import retrain
from ..core import grid
from ..core.config import ConfigError
from ..store import history, results
from .diagrams import (
    circle_shares,
    dynamics_heatmaps,
    metric_distributions,
    metric_heatmaps,
    paper_scatter,
    phase_algorithm,
    phase_diagram,
)
from .inspection import circles_figure, inspection, inspection_data, pick_runs
from .refinement import draw_refinement
from .style import STYLE
from .training import draw_history

FIGURES = "figures"
BOUNDARY_CSV = "boundary.csv"


def save(fig: Figure, folder: Path, name: str, formats) -> list[Path]:
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        results.write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, bbox_inches="tight"))
        paths.append(path)
    return paths


def sweep_figures(frame: pd.DataFrame, x: str, y: str, pooled: list[str], bounds: pd.DataFrame,
                  thresholds: dict, circular_only: bool = False, out_dir=None):
    """(name, Figure) of every figure of the whole sweep (not the single-model ones), one at a
    time: `draw` saves them, `phasescan.report --html` embeds them. With out_dir, the phase
    diagram outlines the cells its recorded stability comparisons found fragile."""
    fragile = stability.fragile_cells(frame, out_dir, [x, y])
    yield "phase_diagram", phase_diagram(frame, x, y, pooled, bounds, fragile=fragile)
    yield "metric_heatmaps", metric_heatmaps(frame, x, y, pooled)
    yield "paper_scatter", paper_scatter(frame, x, y, circular_only)
    yield "metric_distributions", metric_distributions(frame, x, thresholds)
    if "circle_algorithms" in frame:  # tables from before the circles have none
        yield "circle_shares", circle_shares(frame, x, y, pooled)
    if table.has_phases(frame):  # tables from before the learning dynamics have none
        yield "learning_phase_diagram", phase_diagram(frame, x, y, pooled, None, "learning_phase")
        yield "phase_algorithm", phase_algorithm(frame, pooled)
        yield "dynamics_heatmaps", dynamics_heatmaps(frame, x, y, pooled)


def task_bounds(frame: pd.DataFrame, x: str, y: str, pooled: list[str]) -> list[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """(task, its runs, its boundary per y) per task of the sweep (table.by_task: a sweep over p
    gets a diagram and a boundary per p, never one pooled over p)."""
    return [(task, runs, boundary.estimate(runs, x, y, against="clock")) for task, runs in table.by_task(frame, pooled)]


def joined_bounds(parts) -> pd.DataFrame:
    """task_bounds' boundaries as one table, the task's axes first (boundary.csv)."""
    return pd.concat([bounds.assign(**task)[[*task, *bounds.columns]] for task, _, bounds in parts],
                     ignore_index=True)


def every_sweep_figure(parts, x: str, y: str, pooled: list[str], thresholds: dict, circular_only: bool = False,
                       out_dir=None):
    """(file name, figure name, Figure) of sweep_figures per task of task_bounds: `phase_diagram`,
    or `phase_diagram_p23` and so on for a sweep over several tasks."""
    for task, runs, bounds in parts:
        for name, fig in sweep_figures(runs, x, y, pooled, bounds, thresholds, circular_only, out_dir):
            yield name + table.task_suffix(task), name, fig


def summary_figures(source, x: str = "attn_rate", y: str = "d_model") -> dict[str, Figure]:
    """phasescan.figures: the sweep figures in memory, {name: Figure}; source is a results folder
    or a runs table (its .attrs["out_dir"], when set, gives the classification thresholds)."""
    from matplotlib import rc_context

    from ..core.config import compose
    frame = source if isinstance(source, pd.DataFrame) else results.load(source)
    if isinstance(source, pd.DataFrame):
        folder = frame.attrs.get("out_dir")
    else:  # a folder, or a runs.parquet whose folder holds config.yaml
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
    thresholds = (results.read_config(folder) if folder else compose()).get("classify", {})
    x, y, pooled = table.resolve_axes(frame, x, y)
    with rc_context(STYLE):
        return {file: fig for file, _, fig in every_sweep_figure(task_bounds(frame, x, y, pooled), x, y, pooled,
                                                                 thresholds, out_dir=folder)}


def draw(results_dir, x: str = "attn_rate", y: str = "d_model", formats=("png",),
         runs: list[str] | None = None, circular_only: bool = False,
         inspect: str = "auto") -> list[Path]:
    """Draw every figure of a results folder into results_dir/figures/; return the paths.

    `inspect`: "auto" (the chosen runs, retrained when their weights were not kept), "saved"
    (only runs with saved weights: never trains; what the end of a sweep uses) or "none".
    `runs` (run_ids) overrides the automatic choice.
    """
    from matplotlib import rc_context

    out_dir = Path(results_dir)
    frame = results.load(out_dir)
    default = table.resolve_axes(frame)[:2]
    x, y, pooled = table.resolve_axes(frame, x, y)
    swept = table.swept_axes(frame)
    not_swept = [f"{key}={name}: not swept in {out_dir} (swept: {', '.join(swept) or 'none'})"
                 for key, name in (("x", x), ("y", y)) if name not in swept and (x, y)[key == "y"] != default[key == "y"]]
    if not_swept:
        raise ConfigError(not_swept)
    # Axes other than the sweep's own get their own files beside the default figures.
    suffix = "" if (x, y) == default else f"_{x}-{y}"
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise ConfigError(f"--formats {','.join(bad)}: allowed png, pdf, svg")
    unknown = [r for r in runs or [] if r not in set(frame["run_id"])]
    if unknown:
        raise ConfigError(f"--runs {','.join(unknown)}: no such run_id in {out_dir}")
    folder = out_dir / FIGURES
    folder.mkdir(parents=True, exist_ok=True)

    parts = task_bounds(frame, x, y, pooled)
    csv = folder / BOUNDARY_CSV.replace(".csv", f"{suffix}.csv")
    results.write_atomic(csv, lambda tmp: joined_bounds(parts).to_csv(tmp, index=False))
    paths = [csv]
    with rc_context(STYLE):
        thresholds = results.read_config(out_dir).get("classify", {})
        for name, _, fig in every_sweep_figure(parts, x, y, pooled, thresholds, circular_only, out_dir):
            paths += save(fig, folder, name + suffix, formats)
        if runs is None:
            runs = [] if inspect == "none" else pick_runs(frame, inspect == "saved", out_dir)
        metric_opts = results.read_config(out_dir)["metrics"] if runs else None
        rows = [frame.loc[frame["run_id"] == run_id].iloc[0] for run_id in runs]
        for row in [r for r in rows if r["diverged"]]:  # non-finite weights: nothing to draw
            print(f"phasescan: run {row['run_id']} diverged: no inspection figure", file=sys.stderr)
        rows = [r for r in rows if not r["diverged"]]
        chosen = [grid.run_from_row(row) for row in rows]
        for row, run, arrays in zip(rows, chosen, retrain.load_or_retrain(out_dir, [run["run_id"] for run in chosen])):
            freqs = list(row["circle_freqs"]) if "circle_freqs" in row else []
            d = inspection_data(arrays, run, metric_opts, freqs)
            paths += save(inspection(row, d), folder, f"inspect_{row['run_id']}", formats)
            if freqs:
                paths += save(circles_figure(row, d), folder, f"circles_{row['run_id']}", formats)
    return paths + draw_beyond(out_dir, folder, formats)


def draw_beyond(results_dir, figures_dir=None, formats=("png",)) -> list[Path]:
    """The history and refinement figures that the results folder has data for."""
    results_dir = Path(results_dir)
    figures_dir = Path(figures_dir) if figures_dir else results_dir / "figures"
    paths = []
    if (results_dir / history.HISTORY).is_file():
        paths += draw_history(results_dir, figures_dir, formats)
    if (results_dir / refine.REFINEMENT).is_file():
        paths += draw_refinement(results_dir, figures_dir, formats)
    return paths
