"""Experiment tracking: every model of a sweep logged as one Weights & Biases run (`tracking=wandb`).

A sink, never a source: it reads the rows a finished chunk wrote (chunks/chunk-<hash>.parquet and,
with train.log_every, chunks/history-<hash>.parquet) after they are on disk, and sends each run's
fields and ids as its W&B config, its metrics as its summary and its history rows as its curves
(x-axis `step`). It changes nothing that is trained or written; a failure is a warning, and
tracking stops for the rest of the sweep (the runs not logged are caught up on a rerun).

Each run logged is recorded in out_dir/tracking-wandb.txt (one run_id a line), so a resumed sweep
logs only the runs not yet logged; the W&B run id is derived from the run_id and the out_dir, with
resume="allow", so even a lost record continues the same W&B run instead of adding one. Runs are
grouped by sweep (`group`: <sweep.name>-<out_dir name>), `job_type` names the bucket, and each run
is tagged with its algorithm. wandb is imported only when tracking=wandb (the `wandb` extra).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import history, results

log = logging.getLogger("phasescan")

RECORD = "tracking-wandb.txt"  # the run_ids already logged, one a line
SETTINGS = dict(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                x_disable_machine_info=True, disable_git=True, save_code=False,
                x_save_requirements=False)  # per-run work that says nothing about a model


def plain(value):
    """A parquet cell as a JSON-able Python value (numpy scalars and arrays, NaN kept)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA:  # an unset nullable field (results.conform's "Int64" columns)
        return None
    return value


def is_curve(value) -> bool:
    """A history cell worth a chart: a finite-or-NaN number (bools as 0/1), not a list or label."""
    return isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isinf(value))


class WandbSink:
    """Logs runs of one out_dir to W&B, each run once (see the module docstring)."""

    def __init__(self, cfg: dict, out_dir: Path):
        import wandb  # only here: a sweep without tracking never imports it
        self.wandb = wandb
        self.out_dir = Path(out_dir)
        self.options = dict(cfg.get("tracking_options") or {})
        folder = self.out_dir.parent if self.out_dir.name.startswith("shard-") else self.out_dir
        self.group = self.options.get("group") or f"{cfg['sweep'].get('name')}-{folder.name}"
        self.key = hashlib.sha1(str(self.out_dir.resolve()).encode()).hexdigest()[:8]
        # wandb writes <dir>/wandb/; passed, not left to wandb, which reads WANDB_DIR once a process
        self.dir = Path(self.options.get("dir") or os.environ.get("WANDB_DIR") or self.out_dir)
        self.record = self.out_dir / RECORD
        self.logged = set(self.record.read_text().split()) if self.record.is_file() else set()
        self.broken = False
        self.seconds, self.count = 0.0, 0

    def log_chunk(self, rows_file: Path, curves_file: Path | None) -> None:
        """The runs of the chunk just written: its rows file and its history file (or None)."""
        if self.broken:
            return
        try:
            rows = results.read_table(rows_file)
            curves = results.read_table(curves_file) if curves_file else None
        except Exception as error:
            log.warning("tracking=wandb: chunk %s unreadable (%s); its runs are logged at the end",
                        rows_file.name, error)
            return
        self.log_rows(rows, curves)

    def finish(self, frame: pd.DataFrame | None) -> None:
        """At the end of a sweep: log the runs of the finished table not logged yet (done before
        tracking was on, or before a crash) with history.parquet's curves; say what it cost."""
        if not self.broken and frame is not None and not set(frame["run_id"]) <= self.logged:
            path = self.out_dir / history.HISTORY
            try:
                curves = pd.read_parquet(path) if path.is_file() else None
            except Exception as error:
                log.warning("tracking=wandb: %s unreadable (%s); runs logged without curves",
                            path, error)
                curves = None
            self.log_rows(frame, curves)
        if self.count:
            log.info("tracking=wandb: %d runs logged in %.1f s (%.2f s a run), group %s",
                     self.count, self.seconds, self.seconds / self.count, self.group)

    def log_rows(self, rows: pd.DataFrame, curves: pd.DataFrame | None) -> None:
        """Each row not yet logged as one W&B run; `curves` (history rows) as its history."""
        if self.broken or rows is None:
            return
        todo = rows[~rows["run_id"].isin(self.logged)]
        by_run = dict(tuple(curves.groupby("run_id", sort=False))) if curves is not None else {}
        for row in todo.to_dict("records"):
            started = time.perf_counter()
            try:
                self.log_run({k: plain(v) for k, v in row.items()}, by_run.get(row["run_id"]))
            except Exception as error:  # tracking never costs a sweep
                self.broken = True
                log.warning("tracking=wandb: logging run %s failed (%s: %s); tracking is off for "
                            "the rest of this sweep (a rerun into %s logs the runs not logged)",
                            row["run_id"], type(error).__name__, error, self.out_dir)
                return
            self.seconds += time.perf_counter() - started
            self.count += 1
            self.logged.add(row["run_id"])
            with open(self.record, "a") as handle:
                handle.write(row["run_id"] + "\n")

    def log_run(self, row: dict, curve: pd.DataFrame | None) -> None:
        metrics = [c for c in row if c in results.METRIC_COLUMNS]
        config = {c: v for c, v in row.items() if c not in metrics}
        job_type = (f"{row.get('kind')} p={row.get('p')} d_model={row.get('d_model')} "
                    f"n_layers={row.get('n_layers')} steps={row.get('steps')}")[:64]
        tags = list(self.options.get("tags") or []) + [str(row.get("algorithm"))]
        self.dir.mkdir(parents=True, exist_ok=True)
        run = self.wandb.init(
            project=self.options.get("project") or "phasescan", entity=self.options.get("entity"),
            mode=self.options.get("mode"), dir=str(self.dir), group=self.group[:128],
            job_type=job_type, tags=tags, name=row["run_id"], id=f"{row['run_id']}-{self.key}",
            resume="allow", config=config,
            settings=self.wandb.Settings(**SETTINGS))
        try:
            if curve is not None:
                run.define_metric("*", step_metric="step")
                for point in curve.sort_values("step").to_dict("records"):
                    values = {c: plain(v) for c, v in point.items() if c != "run_id"}
                    run.log({c: int(v) if isinstance(v, bool) else v
                             for c, v in values.items() if is_curve(v)}, step=int(point["step"]))
            run.summary.update({c: row[c] for c in metrics})
        finally:
            run.finish()


def sink(cfg: dict, out_dir: Path) -> WandbSink | None:
    """The sweep's tracking sink, or None with tracking=none (config.check_options validated it)."""
    if (cfg.get("tracking") or "none") == "none":
        return None
    try:
        return WandbSink(cfg, out_dir)
    except Exception as error:
        log.warning("tracking=wandb: not tracking this sweep (%s: %s)", type(error).__name__, error)
        return None

