"""The command line, checked before Hydra composes it.

Hydra stops at the first unknown key (with a struct error suggesting `+key=...`) or unknown
config-group option, before phasescan's own validation runs. Here those are reported like every
other configuration error -- key, value, what is allowed -- and together with every problem of
the rest of the command line, before anything is trained or written.
"""
from __future__ import annotations

import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException

from .core.config import CONF_DIR, ConfigError, compose
from .core.grid import RANGE  # Hydra would read linspace(0,1,3) as a call of its own


def quote_ranges(args: list[str]) -> list[str]:
    """`sweep.axes.x=linspace(0,1,3)` -> `sweep.axes.x='linspace(0,1,3)'`: a string for grid."""
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and RANGE.match(value):
            arg = f"{key}='{value.strip()}'"
        quoted.append(arg)
    return quoted


def quote_value(text: str) -> str:
    """`text` as a value Hydra's override grammar reads back as exactly `text`: as it is when
    plain (letters, digits, `_/.-+:@`), else in single quotes, a quote and the backslashes
    before a quote or the end escaped, `${` escaped so OmegaConf does not interpolate it."""
    if re.fullmatch(r"[A-Za-z0-9_/.\-+:@]+", text):
        return text
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'")
    return "'" + escaped.replace("${", "\\${") + "'"


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group (a folder of conf/) and its options (its .yaml files)."""
    return {d.name: sorted(f.stem for f in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir() and not d.name.startswith("_")}


def unknown_names(args: list[str]) -> tuple[list[str], list[str]]:
    """(the other args, problems): unknown config-group options and keys, taken out of args."""
    parser = OverridesParser.create()
    groups = config_groups()
    problems, kept, changes = [], [], []
    for arg in args:
        try:
            override, = parser.parse_overrides([arg]) if "=" in arg and not arg.startswith("-") else [None]
        except HydraException:  # a syntax error: Hydra reports it
            override = None
        # `+key=` / `++key=` add keys: phasescan has no optional ones, so they are checked too
        if (override is None or override.type == OverrideType.DEL or override.package is not None
                or override.key_or_group.startswith("hydra")):
            kept.append(arg)
            continue
        name = override.key_or_group
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        if name in groups and any(v not in groups[name] for v in values):
            bad = ",".join(v for v in values if v not in groups[name])
            problems.append(f"{name}={bad}: unknown {name} (allowed: {', '.join(groups[name])})")
            continue
        kept.append(arg)
        changes.append((override, values[0]))

    # Keys are known if the config that the group choices compose to has them.
    tree = compose(*[f"{o.key_or_group}={first}" for o, first in changes if o.key_or_group in groups])
    for override, _ in changes:
        name, node = override.key_or_group, tree
        parts = name.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):  # below a value: Hydra decides
                break
            if part not in node:
                where = ".".join(parts[:i])
                what = "axis" if where == "sweep.axes" else f"key in {where}" if where else "key"
                written, _, value = override.input_line.partition("=")
                problems.append(f"{written}={value}: unknown {what} (allowed: {', '.join(node)})")
                kept.remove(override.input_line)
                break
            node = node[part]
    return kept, problems


# Hydra's flags that take the next word as their value (`--cfg job`, `-cn other`).
FLAGS_WITH_VALUE = {"-c", "--cfg", "-cp", "--config-path", "-cn", "--config-name",
                    "-cd", "--config-dir", "-p", "--package", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra's flags with their values): flags are Hydra's, never checked here."""
    overrides, flags, i = [], [], 0
    while i < len(args):
        arg = args[i]
        takes_value = arg in FLAGS_WITH_VALUE or (
            arg in ("-i", "--info") and i + 1 < len(args) and args[i + 1] in INFO_TOPICS)
        if arg.startswith("-"):
            flags += args[i:i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
        else:
            overrides.append(arg)
            i += 1
    return overrides, flags


def check(args: list[str]) -> tuple[list[str], list[str]]:
    """(args for Hydra, problems). When a key or group option is unknown, the rest of the command
    line is composed and validated here too, so that every problem is reported at once. Hydra's
    flags pass through untouched."""
    from .runner.sweep import (
        validated_runs,  # imports jax: only when there is something to report
    )

    if {"-sc", "--shell-completion"} & set(args):  # `-sc install=bash`: Hydra's, not overrides
        return args, []
    args, flags = split_flags(quote_ranges(args))
    try:
        kept, problems = unknown_names(args)
    except HydraException:  # the config files themselves do not compose: Hydra says why
        return flags + args, []
    if problems:
        try:
            validated_runs(compose(*[a for a in kept if "=" in a and not a.startswith(("-", "hydra"))]))
        except ConfigError as error:
            problems += error.problems
        except HydraException:  # the rest has a problem of Hydra's own: reported once these are fixed
            pass
    return flags + kept, problems


# ---------------------------------------------------------------- overrides that change nothing

def parsed(args: list[str]) -> list[tuple[str, str]]:
    """(key or group, the override as written) for each plain `key=value` override."""
    parser, out = OverridesParser.create(), []
    for arg in args:
        if "=" not in arg or arg.startswith(("-", "~", "+", "hydra")):
            continue
        try:
            override, = parser.parse_overrides([arg])
        except HydraException:
            continue
        out.append((override.key_or_group, arg))
    return out


def sweep_option(args: list[str]) -> str:
    """The sweep config chosen: the command line's `sweep=...`, else config.yaml's default."""
    chosen = [arg.partition("=")[2] for key, arg in parsed(args) if key == "sweep"]
    if chosen:
        return chosen[-1]
    import yaml
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    return next(d["sweep"] for d in defaults if isinstance(d, dict) and "sweep" in d)


def no_effect(args: list[str], cfg: dict) -> tuple[list[str], list[str]]:
    """(problems, warnings): overrides of `args` that the composed `cfg` ignores.

    - a field set on the command line while the sweep varies it (sweep.axes or every variant):
      refused, the sweep's values win, so every job of `-m model.attn_rate=0,1` would be the same;
    - an axis the model family does not read (attn_rate with model=linear_b): refused, every
      value trains the same model;
    - a config-group option (model=linear_b) whose fields the sweep config sets again (its
      width 256 -> the demo's 64): a warning, the sweep's values are used.
    """
    from .core.config import FIELDS, UNUSED_FIELDS
    from .core.grid import variants_of

    problems, warnings = [], []
    written = parsed(args)
    explicit = {key for key, _ in written}
    source = f"sweep={sweep_option(args)}"
    axes = {name: values for name, values in cfg["sweep"]["axes"].items() if values is not None}
    variants = [v for v in variants_of(cfg, axes) if v] if cfg["sweep"].get("variants") else []
    axis_arg = {key.removeprefix("sweep.axes."): arg for key, arg in written if key.startswith("sweep.axes.")}

    for key, arg in written:
        section, _, name = key.partition(".")
        if name not in FIELDS or FIELDS[name].section != section:
            continue
        where = axis_arg.get(name, f"sweep.axes.{name}={axes.get(name)} from {source}")
        if name in axes:
            problems.append(f"{arg}: has no effect: the sweep varies {name} ({where}); put the "
                            f"values there (sweep.axes.{name}=[...]) or add sweep.axes.{name}=null")
        elif variants and all(name in v for v in variants):
            problems.append(f"{arg}: has no effect: every entry of sweep.variants ({source}) sets {name}")
        elif any(name in v for v in variants):
            warnings.append(f"{arg}: not used by the sweep.variants entries ({source}) that set {name}")

    kinds = {v.get("kind", cfg["model"]["kind"]) for v in variants} or {cfg["model"]["kind"]}
    for name, values in axes.items():
        if len(set(map(str, values))) > 1 and all(name in UNUSED_FIELDS.get(k, ()) for k in kinds):
            where = axis_arg.get(name, f"sweep.axes.{name}={values} from {source}")
            problems.append(f"{where}: has no effect: model.kind={'/'.join(sorted(kinds))} does not read "
                            f"{name}, so every value trains the same model; add sweep.axes.{name}=null")

    groups = [arg for key, arg in written if key in ("task", "model", "train", "classify")]
    if groups:  # what the chosen options set, without the sweep config on top
        plain, chosen = compose("~sweep"), compose("~sweep", *groups)
        for section in ("task", "model", "train"):
            for name, value in chosen[section].items():
                key = f"{section}.{name}"
                if (value != plain[section].get(name) and key not in explicit
                        and (name in axes or cfg[section].get(name) != value)):
                    now = f"sweeps {axes[name]}" if name in axes else f"sets {cfg[section].get(name)!r}"
                    warnings.append(f"{' '.join(groups)} sets {key}={value!r}, but {source} {now}, "
                                    f"which is used; add {key}={value} to keep it")
    return problems, warnings
