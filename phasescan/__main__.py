"""`python -m phasescan [overrides]`: run a sweep (Hydra app; config in conf/)."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import app
from .spec.config import ConfigError

log = logging.getLogger("phasescan")


def fail(error: ConfigError) -> None:
    print("phasescan: configuration error" + ("s:" if len(error.problems) > 1 else ":"),
          file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(2)


def hydra_dir(cfg: dict) -> Path | None:
    """The folder Hydra chose for this job, if any (app.results_dir decides). In a multirun the
    multirun's folder (hydra.sweep.dir: one for all its jobs, so the shards of a sweep land
    together; a job that is not a shard gets its own subfolder); else hydra.run.dir when set on
    the command line (the folder Hydra creates is the one written)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .spec import shard

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Several jobs may share one GPU (submitit_local, or tasks packed on a node): no job
        # may grab most of its memory up front. The user's own setting wins.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        sharded = shard.shard_options(cfg["sweep"])[1] > 1
        return Path(hydra_cfg.sweep.dir) if sharded else Path(hydra_cfg.runtime.output_dir)
    if Path(hydra_cfg.run.dir) != Path("."):  # conf/config.yaml's default is "."
        return Path(hydra_cfg.run.dir)
    return None


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    app.setup_logging()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    app.start_backend(cfg_dict)
    out_dir = None  # known once results_dir has run; Ctrl-C may come before
    try:
        out_dir = app.results_dir(cfg_dict, hydra_dir(cfg_dict))
        frame, out_dir = app.execute(cfg_dict, out_dir, command=command_line(),
                                     overrides=list(HydraConfig.get().overrides.task),
                                     cfg_yaml=OmegaConf.to_yaml(cfg))
    except ConfigError as error:
        fail(error)
    except KeyboardInterrupt as stop:
        if out_dir is None or not (Path(out_dir) / "manifest.json").exists():
            print(f"phasescan: interrupted before anything was written. Run it again: "
                  f"{resume_command(None)}", file=sys.stderr)
        else:
            kept = f"{stop}; finished chunks are kept" if str(stop) else "finished chunks are kept"
            print(f"phasescan: interrupted: {kept} in {out_dir}. Resume with: "
                  f"{resume_command(out_dir)}", file=sys.stderr)
        sys.exit(130)
    except OSError as error:  # a read-only folder, a full disk: one line, finished chunks kept
        print(f"phasescan: cannot write {error.filename or out_dir}: {error.strerror or error}; "
              f"finished chunks are kept in {out_dir}. Free space or choose another out_dir, "
              f"then resume with: {resume_command(out_dir)}", file=sys.stderr)
        sys.exit(1)
    from .analysis import table
    print(table.format_table(frame))
    if cfg.plot and cfg.sweep.num_shards > 1:
        log.info("figures: drawn for the whole sweep by `python -m phasescan.merge` once every "
                 "shard is done")
    elif cfg.plot:
        draw_figures(out_dir)


def program() -> str:
    return "phasescan" if Path(sys.argv[0]).name == "phasescan" else "python -m phasescan"


def command_line() -> str:
    """This command as typed (quoted for a shell)."""
    return " ".join([program(), *map(shlex.quote, sys.argv[1:])])


def resume_command(out_dir: Path | None) -> str:
    """This command again, writing to the same folder (out_dir made explicit)."""
    args = [a for a in sys.argv[1:] if not a.startswith("out_dir=")]
    if out_dir is not None:
        args.append(f"out_dir={out_dir}")
    return " ".join([program(), *map(shlex.quote, args)])


def draw_figures(out_dir: Path) -> None:
    try:
        drawn = app.draw_figures(out_dir)
    except KeyboardInterrupt:
        log.error("interrupted while drawing the figures; the results are complete in %s. Draw "
                  "them with: python -m phasescan.plot %s", out_dir, out_dir)
        sys.exit(130)
    if not drawn:
        sys.exit(1)


def terminate(signum, frame):
    """SIGTERM (a scheduler's stop) as Ctrl-C: the same one-line report and resume command.
    While chunks train, sweep.stop_on_signals handles both (stopping within a segment)."""
    raise KeyboardInterrupt


def cli() -> None:
    """The `phasescan` command (and `python -m phasescan`)."""
    signal.signal(signal.SIGTERM, terminate)
    if "--version" in sys.argv[1:]:  # Hydra's own flag would print Hydra's version
        print(version_line())
        return
    try:
        from .overrides import check

        sys.argv[1:], problems = check(sys.argv[1:])  # unknown keys/options: reported like the rest
        if problems:
            fail(ConfigError(problems))
        main()
    except KeyboardInterrupt:  # before Hydra started: nothing was written
        print(f"phasescan: interrupted before anything was written. Run it again: "
              f"{resume_command(None)}", file=sys.stderr)
        sys.exit(130)


def version_line() -> str:
    from importlib.metadata import version

    from .spec.version import __version__
    return f"phasescan {__version__} (hydra-core {version('hydra-core')}, jax {version('jax')})"


if __name__ == "__main__":
    cli()
