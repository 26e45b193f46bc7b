"""The one boundary where configuration enters: the field registry and validation.

Every task/model/train field a sweep can set or sweep over is registered here once, with its
section, its type and whether it is *vmapped* (a per-model array inside one compiled program)
or *shape-changing* (it splits the grid into buckets, each compiled once).
"""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration mistake, reported to the user in one short line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Field:
    section: str  # task | model | train
    type: type  # int | float | str
    vmapped: bool  # per-model array (True) or bucket key (False)
    check: Any = None  # value -> error text or None
    nullable: bool = False
    identity: bool = True  # part of the run_id (False: how a run is recorded, not what it trains)


def _in_unit_interval(v):
    return None if 0.0 <= v <= 1.0 else "must lie in [0, 1]"


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _train_frac(v):
    return None if 0.0 < v <= 1.0 else "must lie in (0, 1]"


def _at_least(n):
    return lambda v: None if v >= n else f"must be >= {n}"


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


FIELDS: dict[str, Field] = {
    # task
    "p": Field("task", int, False, _at_least(2)),
    "train_frac": Field("task", float, True, _train_frac),
    "split_seed": Field("task", int, True, _non_negative, nullable=True),
    # model
    "d_model": Field("model", int, False, _positive),
    "n_layers": Field("model", int, False, lambda v: None if 1 <= v <= 4 else "must lie in 1..4"),
    "n_heads": Field("model", int, False, _positive),
    "act": Field("model", str, False, _one_of("relu", "gelu")),
    "attn_rate": Field("model", float, True, _in_unit_interval),
    # train
    "steps": Field("train", int, False, _positive),
    "batch_size": Field("train", int, False, _positive, nullable=True),
    "lr": Field("train", float, True, _positive),
    "weight_decay": Field("train", float, True, _non_negative),
    "beta1": Field("train", float, True, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "beta2": Field("train", float, True, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "warmup_steps": Field("train", int, True, _non_negative),
    # metrics every log_every steps during training (0 / null = off): phasescan/history.py
    "log_every": Field("train", int, False, _non_negative, nullable=True, identity=False),
}

VMAPPED = tuple(name for name, f in FIELDS.items() if f.vmapped)
STATIC = tuple(name for name, f in FIELDS.items() if not f.vmapped)


def coerce(name: str, value: Any, where: str) -> Any:
    """Check one field value's type and range; return it as the field's Python type."""
    field = FIELDS[name]
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {field.type.__name__})")
    ok = (
        isinstance(value, str) if field.type is str
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        and (field.type is float or float(value).is_integer())
    )
    if not ok:
        raise ConfigError(f"{where}={value!r}: expected {'an integer' if field.type is int else field.type.__name__}")
    value = field.type(value)
    problem = field.check(value) if field.check else None
    if problem:
        raise ConfigError(f"{where}={value!r}: {problem}")
    return value


def cross_check(run: dict) -> list[str]:
    """Constraints between fields of one run."""
    problems = []
    if run["d_model"] % run["n_heads"]:
        problems.append(
            f"model.d_model={run['d_model']}: must be divisible by model.n_heads={run['n_heads']}")
    if run.get("log_every") and run["steps"] % run["log_every"]:
        problems.append(f"train.log_every={run['log_every']}: must divide train.steps={run['steps']}")
    return problems


def compose(*overrides: str) -> dict:
    """The resolved config as a plain dict, exactly as `python -m phasescan OVERRIDES` sees it
    (for tools and tests that run outside the Hydra app)."""
    from pathlib import Path

    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(version_base=None, config_dir=str(conf_dir)):
        return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)
