"""The command line, checked before Hydra composes it.

Hydra stops at the first unknown key (with a struct error suggesting `+key=...`) or unknown
config-group option, before phasescan's own validation runs. Here those are reported like every
other configuration error -- key, value, what is allowed -- and together with every problem of
the rest of the command line, before anything is trained or written.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException

from .config import CONF_DIR, ConfigError, compose
from .grid import RANGE  # Hydra would read linspace(0,1,3) as a call of its own

def quote_ranges(args: list[str]) -> list[str]:
    """`sweep.axes.x=linspace(0,1,3)` -> `sweep.axes.x='linspace(0,1,3)'`: a string for grid."""
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and RANGE.match(value):
            arg = f"{key}='{value.strip()}'"
        quoted.append(arg)
    return quoted


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group (a folder of conf/) and its options (its .yaml files)."""
    return {d.name: sorted(f.stem for f in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir()}


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


def check(args: list[str]) -> tuple[list[str], list[str]]:
    """(args for Hydra, problems). When a key or group option is unknown, the rest of the command
    line is composed and validated here too, so that every problem is reported at once."""
    from .sweep import validated_runs  # imports jax: only when there is something to report

    args = quote_ranges(args)
    try:
        kept, problems = unknown_names(args)
    except HydraException:  # the config files themselves do not compose: Hydra says why
        return args, []
    if problems:
        try:
            validated_runs(compose(*[a for a in kept if "=" in a and not a.startswith(("-", "hydra"))]))
        except ConfigError as error:
            problems += error.problems
        except HydraException:  # the rest has a problem of Hydra's own: reported once these are fixed
            pass
    return kept, problems
