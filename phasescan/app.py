"""One sweep from a composed config to a finished folder: what the `phasescan` command and the
Python API (`phasescan.run`) share, so both write the same folder -- config.yaml, runs.parquet,
figures, the compile cache used, and a record of how the folder was made:

  invocations.yaml  one entry per command that wrote here (time, cwd, command line, overrides,
                    phasescan's version): the first run and every resume
  phasescan.log     the log lines of those runs (appended)
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .analysis import table
from .core.config import ConfigError
from .core.version import __version__

log = logging.getLogger("phasescan")
INVOCATIONS = "invocations.yaml"
LOG_FILE = "phasescan.log"


def setup_logging(exclusive: bool = True) -> None:
    """phasescan's lines on stderr, once. exclusive (the command; Hydra's own logging is off:
    conf/config.yaml): not passed on to the root logger. The Python API passes them on too, so a
    notebook's or a test's own logging setup still sees them."""
    if not any(type(h) is logging.StreamHandler for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("phasescan: %(message)s"))
        handler.setLevel(logging.INFO)  # the log file also gets DEBUG lines (the phase table)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    log.propagate = not exclusive


def start_backend(cfg: dict) -> None:
    """Determinism: before JAX starts its backend (validation asks for the devices). It writes
    nothing; the persistent compile cache is enabled by `execute`, once the config is valid
    (its folder is created then, not before)."""
    from .engine.determinism import enable as enable_determinism

    enable_determinism(cfg.get("deterministic", True) is True)


def results_dir(cfg: dict, hydra_dir: Path | None = None) -> Path:
    """Where a sweep writes: out_dir; else the folder Hydra chose (hydra_dir: a multirun's, or
    hydra.run.dir set on the command line); else results/<sweep>/<timestamp>/ -- which a shard
    may not use (every shard of a sweep must write under the same folder). A shard writes into
    <that>/shard-<i>-of-<N>/ (phasescan.shard)."""
    from .core import shard
    from .core.config import path_problems

    problems = path_problems({"out_dir": cfg.get("out_dir")})
    if problems:  # before it becomes a Path (a number, an empty string: the current folder)
        raise ConfigError(problems)
    if cfg["out_dir"] is not None:
        base = Path(cfg["out_dir"])
    elif hydra_dir is not None:
        base = Path(hydra_dir)
    elif shard.shard_options(cfg["sweep"])[1] > 1:
        raise ConfigError("out_dir: required with sweep.num_shards > 1 outside a multirun (every "
                          "shard of a sweep must write under the same folder)")
    else:
        base = Path(f"results/{cfg['sweep']['name']}/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    return shard.results_dir(base, cfg["sweep"])


def check_overrides(overrides: list[str], cfg: dict) -> None:
    """Refuse overrides that change nothing; warn about those the sweep config sets again."""
    from .overrides import no_effect

    problems, warnings = no_effect(overrides, cfg)
    if problems:
        raise ConfigError(problems)
    for warning in warnings:
        log.warning("warning: %s", warning)


@contextmanager
def log_file(out_dir: Path):
    """phasescan's log lines also go to out_dir/phasescan.log (appended) while this is held."""
    handler = logging.FileHandler(out_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


@contextmanager
def recorded(out_dir: Path, command: str, overrides: list[str]):
    """Append this invocation to out_dir/invocations.yaml and log into out_dir/phasescan.log
    (sweep.run_sweep holds this once the folder is the sweep's and locked)."""
    import yaml

    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cwd": os.getcwd(), "command": command,
             "overrides": list(overrides), "phasescan": __version__}
    with open(out_dir / INVOCATIONS, "a") as record:  # appended: a resume adds its own entry
        record.write(yaml.safe_dump([entry], sort_keys=False, width=10_000))
    with log_file(out_dir):
        log.debug("%s", command)  # the file only: the terminal has it already
        yield


def already_done(plan, out_dir: Path) -> frozenset:
    """The run_ids of the plan already in out_dir (a resume), for the plan's summary."""
    from .runner.sweep import done_run_ids, out_dir_holds

    if not (Path(out_dir) / "chunks").is_dir() or out_dir_holds(Path(out_dir), plan.identity) is not None:
        return frozenset()
    return frozenset(done_run_ids(Path(out_dir)))


def execute(cfg: dict, out_dir: Path, *, command: str, overrides: list[str],
            cfg_yaml: str | None = None) -> tuple[pd.DataFrame, Path]:
    """Validate, say the plan, train, measure and record the sweep; return (runs table, the
    folder used); with dry_run=true only the plan (table None). Raises ConfigError for a bad
    configuration (nothing trained or written then)."""
    from .engine.compile_cache import enable as enable_compile_cache
    from .runner.summary import summary
    from .runner.sweep import choose_out_dir, make_plan, run_sweep

    check_overrides(overrides, cfg)
    plan = make_plan(cfg)  # the one validation: everything below reads the plan
    out_dir = choose_out_dir(plan, out_dir)  # refused, or moved by out_dir_taken=sibling: nothing written
    for line in summary(plan, already_done(plan, out_dir)):
        log.info("%s", line)
    if cfg.get("dry_run"):
        log.info("dry_run=true: nothing trained, nothing written (out_dir would be %s)", out_dir)
        return None, out_dir
    enable_compile_cache(cfg.get("compile_cache"))  # validated: its folder may be created now
    frame = run_sweep(plan, out_dir, cfg_yaml,
                      record=lambda folder: recorded(folder, command, overrides))
    with log_file(out_dir):
        log.info("%d runs -> %s", len(frame), out_dir / "runs.parquet")
        log.debug("phase table:\n%s", table.format_table(frame))
    return frame, out_dir


def draw_figures(out_dir: Path) -> bool:
    """The sweep's figures; inspection figures only for runs whose weights were saved (no
    retraining). A failure is logged with how to draw them again (the results are on disk):
    returns whether they were drawn."""
    from .plots import draw

    with log_file(out_dir):
        try:
            paths = draw.draw(out_dir, inspect="saved")
        except Exception as error:
            log.error("drawing the figures failed (%s: %s); results are kept, retry with "
                      "`python -m phasescan.plot %s`", type(error).__name__, error,
                      shlex.quote(str(out_dir)))
            return False
        log.info("figures (%d files) -> %s", len(paths), out_dir / draw.FIGURES)
    return True
