"""phasescan: map the algorithmic phase space of small transformers (Clock / Pizza / other).

From Python (a notebook), the same sweep and folder as the `phasescan` command:

    import phasescan
    runs = phasescan.run(["task.p=23", "sweep.axes.attn_rate=[0,0.5,1]", "train.steps=1000"])
    runs.attrs["out_dir"]                   # where config.yaml, runs.parquet, figures/ went
    figs = phasescan.figures(runs.attrs["out_dir"])   # {name: matplotlib Figure}
    phasescan.load("results/demo/...")      # a finished folder's runs table
    model = phasescan.load_model("results/demo/...", run_id="3f2a")   # one kept model (docs/interp.md)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .core.config import ConfigError
from .core.version import __version__

__all__ = ["run", "figures", "load", "load_model", "ConfigError", "__version__"]


def run(overrides: Sequence[str] | Mapping | None = None, *, out_dir: str | Path | None = None):
    """Run a sweep and return its runs table (pandas.DataFrame; `.attrs["out_dir"]` is the folder).

    overrides: command-line overrides (["sweep=width_vs_attn", "task.p=23"]), or a config mapping
    (a dict or DictConfig, whole or partial: merged onto the defaults). out_dir: as the `out_dir=`
    override (default results/<sweep.name>/<timestamp>/). The folder is the CLI's: config.yaml,
    runs.parquet, the figures (unless plot=false), invocations.yaml, phasescan.log; running it
    again with the same out_dir resumes. A bad configuration raises ConfigError (its .problems
    name each bad key and the allowed values) before anything is trained or written. With
    dry_run=true it logs the plan (runs, buckets, chunks, memory, time estimate) and returns None.
    """
    from . import app

    cfg, args, command = configure(overrides, out_dir)
    app.setup_logging(exclusive=False)
    app.start_backend(cfg)
    frame, folder = app.execute(cfg, app.results_dir(cfg), command=command, overrides=args)
    if frame is None:  # dry_run=true: the plan was logged, nothing trained or written
        return None
    if cfg["plot"] and cfg["sweep"]["num_shards"] == 1:
        app.draw_figures(folder)  # a failure is logged: the results are on disk
    frame.attrs["out_dir"] = str(folder)
    return frame


def configure(overrides=None, out_dir=None) -> tuple[dict, list[str], str]:
    """run()'s arguments -> (the composed config, the overrides recorded, the command recorded).
    Raises ConfigError naming each bad key (or override) and what is allowed."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .overrides import check, quote_value
    from .core.config import compose, merge_mapping

    if out_dir is not None and not isinstance(out_dir, (str, Path)):
        raise ConfigError(f"out_dir={out_dir!r}: must be None or a folder path (str or Path)")
    out_arg = [] if out_dir is None else [f"out_dir={quote_value(str(out_dir))}"]  # spaces, accents
    if isinstance(overrides, Mapping):
        if OmegaConf.is_config(overrides):  # its interpolations resolved once merged
            overrides = OmegaConf.to_container(overrides, resolve=False)
        args = out_arg
        merged = merge_mapping(compose(*args), overrides)
        try:
            cfg = OmegaConf.to_container(OmegaConf.create(merged), resolve=True)
        except OmegaConfBaseException as error:  # an interpolation that does not resolve, ...
            key = getattr(error, "full_key", None) or "?"
            raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from None
        return cfg, args, "phasescan.run(<a config mapping>)"
    if overrides is None or (isinstance(overrides, Sequence) and not isinstance(overrides, str)):
        overrides = list(overrides or [])
        bad = [f"overrides[{i}]={arg!r}: expected a string key=value (e.g. 'task.p=23')"
               for i, arg in enumerate(overrides) if not isinstance(arg, str)]
        if bad:
            raise ConfigError(bad)
        args, problems = check([*overrides, *out_arg])
        problems += [f"{arg}: {problem}" for arg in args if (problem := override_problem(arg))]
        if problems:
            raise ConfigError(problems)
        try:
            cfg = compose(*args)
        except HydraException as error:  # Hydra's own (a value of the wrong type, ...)
            raise ConfigError(f"{' '.join(args)}: {str(error).strip().splitlines()[0]}") from None
        return cfg, args, f"phasescan.run({overrides!r})"
    raise ConfigError(f"overrides={overrides!r}: expected a list of overrides or a config mapping")


def override_problem(arg: str) -> str | None:
    """Why Hydra cannot parse one override (None: it can)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([arg])
    except HydraException as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error parsing") else lines[0]
        hint = " (expected key=value)" if "=" not in arg else ""
        return f"not an override{hint}: {reason.strip()}"
    return None


def load(source, *more):
    """A results folder's runs table (pandas.DataFrame; a folder still running or stopped: its
    finished chunks, with a note), or a runs.parquet file. Several sources, a glob
    ("results/grid/*") or a folder of results folders (a Hydra multirun's): one table, each row
    with its `folder` and the `overrides` of the command that wrote it in front."""
    from .store.results import load_many

    return load_many(source, *more)


def figures(source, x: str = "attn_rate", y: str = "d_model") -> dict:
    """The sweep's summary figures as matplotlib Figures, {name: Figure}, drawn in memory (no
    files written). source: a results folder or a runs table (phasescan.run / phasescan.load)."""
    from .plots.draw import summary_figures

    return summary_figures(source, x, y)


def load_model(path_or_folder, run_id: str | None = None):
    """One saved model to inspect (docs/interp.md): a weights .npz (docs/weights-format.md), or a
    results folder and the run_id (a unique prefix; optional where one model was kept) of a model
    its sweep kept (save_weights). Returns a LoadedModel: `.config`, `.logits(tokens)`,
    `.all_pairs()`, `.all_labels()`, `.activations(tokens)` and `.to_transformer_lens()` (pip
    install "phasescan[interp]"). A missing, ambiguous or unknown run_id, or a file that is not
    in the layout, raises ConfigError naming the choices."""
    from .runner.loaded import load_model as load_one

    return load_one(path_or_folder, run_id)
