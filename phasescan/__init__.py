"""phasescan: map the algorithmic phase space of small transformers (Clock / Pizza / other).

From Python (a notebook), the same sweep and folder as the `phasescan` command:

    import phasescan
    runs = phasescan.run(["task.p=23", "sweep.axes.attn_rate=[0,0.5,1]", "train.steps=1000"])
    runs.attrs["out_dir"]                   # where config.yaml, runs.parquet, figures/ went
    figs = phasescan.figures(runs.attrs["out_dir"])   # {name: matplotlib Figure}
    phasescan.load("results/demo/...")      # a finished folder's runs table
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .spec.config import ConfigError
from .spec.version import __version__
from .store.results import load

__all__ = ["run", "figures", "load", "ConfigError", "__version__"]


def run(overrides: Sequence[str] | Mapping | None = None, *, out_dir: str | Path | None = None):
    """Run a sweep and return its runs table (pandas.DataFrame; `.attrs["out_dir"]` is the folder).

    overrides: command-line overrides (["sweep=width_vs_attn", "task.p=23"]), or a config mapping
    (a dict or DictConfig, whole or partial: merged onto the defaults). out_dir: as the `out_dir=`
    override (default results/<sweep.name>/<timestamp>/). The folder is the CLI's: config.yaml,
    runs.parquet, the figures (unless plot=false), invocations.yaml, phasescan.log; running it
    again with the same out_dir resumes. A bad configuration raises ConfigError (its .problems
    name each bad key and the allowed values) before anything is trained or written.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from . import app
    from .overrides import check
    from .spec.config import compose

    if isinstance(overrides, Mapping):
        args = [] if out_dir is None else [f"out_dir={out_dir}"]
        base = OmegaConf.create(compose(*args))
        OmegaConf.set_struct(base, True)  # an unknown key is an error, not a new key
        try:
            cfg = OmegaConf.to_container(OmegaConf.merge(base, dict(overrides)), resolve=True)
        except OmegaConfBaseException as error:  # name the key and what its section allows
            parent, _, _ = str(error.full_key).rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            allowed = ", ".join(map(str, node.keys())) if OmegaConf.is_dict(node) else "see --help"
            raise ConfigError(f"{error.full_key}: unknown key (allowed: {allowed})") from None
        command = "phasescan.run(<a config mapping>)"
    elif overrides is None or (isinstance(overrides, Sequence) and not isinstance(overrides, str)):
        args, problems = check([*(overrides or []), *([f"out_dir={out_dir}"] if out_dir else [])])
        if problems:
            raise ConfigError(problems)
        cfg = compose(*args)
        command = f"phasescan.run({list(overrides or [])!r})"
    else:
        raise ConfigError(f"overrides={overrides!r}: expected a list of overrides or a config mapping")
    app.setup_logging(exclusive=False)
    app.start_backend(cfg)
    frame, folder = app.execute(cfg, app.results_dir(cfg), command=command, overrides=args)
    if cfg["plot"] and cfg["sweep"]["num_shards"] == 1:
        app.draw_figures(folder)  # a failure is logged: the results are on disk
    frame.attrs["out_dir"] = str(folder)
    return frame


def figures(source, x: str = "attn_rate", y: str = "d_model") -> dict:
    """The sweep's summary figures as matplotlib Figures, {name: Figure}, drawn in memory (no
    files written). source: a results folder or a runs table (phasescan.run / phasescan.load)."""
    from .plots.draw import summary_figures

    return summary_figures(source, x, y)
