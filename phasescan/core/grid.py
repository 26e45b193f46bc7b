"""Grid expansion: a sweep config -> the ordered list of runs, their run_ids and buckets.

A run is a plain dict holding every registered field (config.FIELDS) plus `seed` and
`data_seed`. The grid is the product of the swept axes (in config order) times the seeds, for
each entry of `sweep.variants` in turn when that list is set (variants differ in several fields
at once, e.g. a model kind and its optimiser, which a product of axes cannot express).
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import math
import operator
import re
from typing import Any

import numpy as np

from .config import FIELDS, MAX_SEED, STATIC, ConfigError, coerce, cross_check, is_int

MAX_RUNS = 10_000_000  # a grid larger than this is refused, not expanded
RANGE = re.compile(r"^\s*(linspace|logspace|geomspace|uniform|loguniform)\s*\((.*)\)\s*$")


def axis_values(name: str, spec: Any, sample_seed: int) -> list:
    """Values of one axis: a list, a scalar, or a compact range.

    Ranges: "linspace(0,1,21)", "geomspace(32,512,5)", "logspace(5,9,5,2)" (numpy's meaning:
    exponents, optional base), and random samples "uniform(0,1,N)", "loguniform(1e-4,1e-2,N)"
    drawn from sweep.sample_seed. The dict form {linspace: [0, 1, 21]} is the same.
    """
    where = f"sweep.axes.{name}"
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ConfigError(f"{where}={spec}: a range is one of linspace, logspace, geomspace, "
                              "uniform, loguniform with a list of arguments")
        (kind, args), = spec.items()
        spec = f"{kind}({','.join(str(a) for a in args)})"
    if isinstance(spec, str) and (FIELDS[name].type is not str or RANGE.match(spec)):
        match = RANGE.match(spec)
        if not match:
            raise ConfigError(f"{where}={spec!r}: expected a list, or one of linspace(a,b,n), "
                              "logspace(a,b,n[,base]), geomspace(a,b,n), uniform(a,b,n), loguniform(a,b,n)")
        kind = match.group(1)
        try:
            args = [float(x) for x in match.group(2).split(",")]
        except ValueError:
            raise ConfigError(f"{where}={spec!r}: range arguments must be numbers") from None
        if len(args) not in (3, 4) or not float(args[2]).is_integer() or args[2] < 1:
            raise ConfigError(f"{where}={spec!r}: expected {kind}(start, stop, num) with num a positive integer")
        lo, hi, num = args[0], args[1], int(args[2])
        if not all(np.isfinite(args)) or num > MAX_RUNS:
            raise ConfigError(f"{where}={spec!r}: arguments must be finite, num at most {MAX_RUNS:,}")
        if kind in ("geomspace", "loguniform") and not (lo > 0 and hi > 0):
            raise ConfigError(f"{where}={spec!r}: {kind} needs start and stop > 0")
        rng = np.random.default_rng(sample_seed)
        values = {
            "linspace": lambda: np.linspace(lo, hi, num),
            "logspace": lambda: np.logspace(lo, hi, num, base=args[3] if len(args) == 4 else 10.0),
            "geomspace": lambda: np.geomspace(lo, hi, num),
            "uniform": lambda: rng.uniform(lo, hi, num),
            "loguniform": lambda: np.exp(rng.uniform(np.log(lo), np.log(hi), num)),
        }[kind]()
        if not np.all(np.isfinite(values)):  # e.g. logspace(400,401,2): too large for a float
            raise ConfigError(f"{where}={spec!r}: gives non-finite values")
        if FIELDS[name].type is int:
            values = np.round(values)
        # 12 significant digits: linspace's 0.15000000000000002 becomes 0.15 in tables and ids.
        spec = [float(f"{v:.12g}") for v in values]
    values = spec if isinstance(spec, (list, tuple)) else [spec]
    if not values:
        raise ConfigError(f"{where}: an axis needs at least one value")
    values = [coerce(name, v, f"{where}[{i}]") for i, v in enumerate(values)]
    counts = collections.Counter(values)  # linear: an axis may hold millions of values
    repeated = sorted((v for v, n in counts.items() if n > 1), key=str)
    if repeated:  # the same runs twice; more seeds are sweep.seeds
        raise ConfigError(f"{where}: repeats {', '.join(map(str, repeated))} (each value once; "
                          "more models per point: sweep.seeds)")
    return values


def seeds_of(sweep: dict) -> range:
    seeds = sweep.get("seeds")
    if not is_int(seeds) or seeds < 1:
        raise ConfigError(f"sweep.seeds={seeds!r}: must be a positive integer (the number of seeds)")
    start = sweep.get("seed_start", 0)
    if not is_int(start) or start < 0:
        raise ConfigError(f"sweep.seed_start={start!r}: must be a non-negative integer")
    if start + seeds - 1 > MAX_SEED:  # JAX's random keys are 32-bit
        raise ConfigError(f"sweep.seed_start={start!r}: the seeds {start}..{start + seeds - 1} must "
                          f"lie in 0..{MAX_SEED} (32-bit JAX random seeds; sweep.seeds={seeds})")
    return range(start, start + seeds)  # lazy: a huge count is refused by size, not built


def base_fields(cfg: dict) -> dict:
    """The fixed value of every registered field, from the task/model/train sections."""
    base, problems = checked_base_fields(cfg)
    if problems:
        raise ConfigError(problems)
    return base


def checked_base_fields(cfg: dict) -> tuple[dict, list[str]]:
    """(the valid fields' values, the problems of the others)."""
    base, problems = {}, []
    for section in ("task", "model", "train"):
        for key in cfg.get(section) or {}:
            if key not in FIELDS or FIELDS[key].section != section:
                allowed = ", ".join(n for n, f in FIELDS.items() if f.section == section)
                problems.append(f"{section}.{key}: unknown field (allowed: {allowed})")
    for name, field in FIELDS.items():
        section = cfg.get(field.section) or {}
        if name not in section:
            if field.added_later:  # a config from before the field: every run had its default
                base[name] = field.default
            else:
                problems.append(f"{field.section}.{name}: missing")
            continue
        try:
            base[name] = coerce(name, section[name], f"{field.section}.{name}")
        except ConfigError as e:
            problems += e.problems
    return base, problems


def swept_axes(cfg: dict) -> dict[str, list]:
    """The axes that are set (not null), in config order, each expanded to its values."""
    axes, problems = checked_swept_axes(cfg)
    if problems:
        raise ConfigError(problems)
    return axes


def checked_swept_axes(cfg: dict) -> tuple[dict[str, list | None], list[str]]:
    """(the axes, None for an invalid one; the problems)."""
    sweep = cfg["sweep"]
    axes, problems = {}, []
    for name, spec in (sweep.get("axes") or {}).items():
        if spec is None:
            continue
        if name not in FIELDS or not FIELDS[name].identity:
            # A field that does not change the model (log_every) would only repeat the same runs.
            what = "unknown axis" if name not in FIELDS else "not an axis (it does not change the model)"
            allowed = ", ".join(n for n, f in FIELDS.items() if f.identity)
            problems.append(f"sweep.axes.{name}: {what} (allowed: {allowed})")
            continue
        try:
            axes[name] = axis_values(name, spec, sweep.get("sample_seed", 0))
        except ConfigError as e:
            axes[name] = None
            problems += e.problems
    return axes, problems


def run_from_row(row) -> dict:
    """A results row (pandas Series or dict) back to a run dict (NaN or pandas' NA -> None for
    nullable fields)."""
    run = {}
    for name, field in FIELDS.items():
        # tables older than the field
        value = row.get(name) if field.nullable or field.added_later else row[name]
        if field.nullable and missing(value):
            value = None
        elif field.added_later and missing(value):
            value = field.default
        run[name] = coerce(name, value.item() if hasattr(value, "item") else value, name)
    for key in ("seed", "data_seed", "run_index"):
        run[key] = int(row[key])
    run["run_id"] = run_id(run)
    return run


def missing(value) -> bool:
    """None, NaN, or pandas' NA (an empty cell of a nullable "Int64" column: results.conform)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN only
    except TypeError:  # pandas.NA: a comparison with it is NA, whose truth is ambiguous
        return True


def variants_of(cfg: dict, axes: dict) -> list[dict]:
    """`sweep.variants`: a list of points, each a mapping field -> value set together on top of
    the base config; null or empty means one variant, the base config itself."""
    variants = cfg["sweep"].get("variants")
    if variants is None or variants == []:
        return [{}]
    if not isinstance(variants, list):
        raise ConfigError(f"sweep.variants={variants!r}: expected a list of field: value mappings")
    out, problems = [], []
    for i, variant in enumerate(variants):
        where = f"sweep.variants[{i}]"
        if not isinstance(variant, dict):
            problems.append(f"{where}={variant!r}: expected a mapping of field: value")
            continue
        point = {}
        for name, value in variant.items():
            if name not in FIELDS:
                problems.append(f"{where}.{name}: unknown field (allowed: {', '.join(FIELDS)})")
            elif name in axes:
                problems.append(f"{where}.{name}: also a sweep axis; set it in one place")
            else:
                try:
                    point[name] = coerce(name, value, f"{where}.{name}")
                except ConfigError as e:
                    problems += e.problems
        out.append(point)
    if problems:
        raise ConfigError(problems)
    return out


def data_seed(point: dict, seed: int) -> int:
    """The seed of a run's train/test split: task.split_seed when set (one split for all), else
    the run's own seed."""
    return seed if point["split_seed"] is None else point["split_seed"]


def run_id(run: dict) -> str:
    """A stable id derived from everything that determines the trained model. A field added
    later (config.Field.default) is left out while it sits at its default: runs from before it
    keep their ids."""
    identity = {name: run[name] for name, f in FIELDS.items()
                if f.identity and not f.at_default(run[name])}
    identity |= {"seed": run["seed"], "data_seed": run["data_seed"]}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


class RunIds:
    """run_id(run) for the runs of one variant, its identity's JSON text encoded once with a hole
    for each swept field and the seeds, each value encoded once: a grid of a million runs hashes
    a million identities, and json.dumps of each would be most of its validation. The text is
    exactly run_id's (tests/test_faults.py compares them)."""

    def __init__(self, point: dict, swept: dict[str, list], exact: bool = False):
        holes = {name: f"\0{name}\0" for name in [*swept, "seed", "data_seed"]}
        identity = {name: holes.get(name, point.get(name)) for name, f in FIELDS.items()
                    if f.identity and (name in holes or not f.at_default(point.get(name)))}
        # A swept field added later leaves the id where it sits at its default: those grids
        # take run_id's own path.
        self.point, self.swept = point, swept
        self.exact = exact or any(FIELDS[name].added_later for name in swept)
        text = json.dumps(identity | {"seed": holes["seed"], "data_seed": holes["data_seed"]},
                          sort_keys=True)
        pattern = "|".join(re.escape(json.dumps(hole)) for hole in holes.values())
        by_token = {json.dumps(hole): name for name, hole in holes.items()}
        self.pieces = re.split(f"({pattern})", text)  # text, hole, text, hole, ..., text
        self.slots = [by_token[piece] for piece in self.pieces[1::2]]
        self.encoded = {name: [json.dumps(v) for v in values] for name, values in swept.items()}

    def __call__(self, indices: dict[str, int], seed: int, data: int) -> str:
        """The run_id of the run with swept[name][indices[name]] for each swept field."""
        if self.exact:
            point = self.point | {name: axis[indices[name]] for name, axis in self.swept.items()}
            return run_id(with_forward(point) | {"seed": seed, "data_seed": data})
        values = {"seed": str(seed), "data_seed": str(data)}
        pieces = self.pieces.copy()
        for i, name in enumerate(self.slots):
            pieces[2 * i + 1] = values[name] if name in values else self.encoded[name][indices[name]]
        return hashlib.sha1("".join(pieces).encode()).hexdigest()[:12]


# The fields that decide whether a model has the factored forward (model.forward).
FORWARD_DECIDES = ("kind", "n_layers")


def with_forward(point: dict) -> dict:
    """`point` with the forward it is trained with: model.forward=factored is the one-layer
    transformer's (engine/model.py); a deeper or linear model runs direct, and says so."""
    if point.get("forward") == "factored" and (point.get("kind"), point.get("n_layers")) != ("transformer", 1):
        return point | {"forward": "direct"}
    return point


_bucket_fields = operator.itemgetter(*STATIC)


def bucket_key(run: dict) -> tuple:
    """Runs with the same shape-changing fields share one compiled program."""
    return _bucket_fields(run)


def expand(cfg: dict) -> list[dict]:
    """All runs of a sweep, in grid order, validated. Raises ConfigError listing every problem."""
    base, problems = checked_base_fields(cfg)
    axes, axes_problems = checked_swept_axes(cfg)
    problems += axes_problems
    # An invalid axis drops out of the grid and out of the constraint checks below.
    base = {name: value for name, value in base.items() if axes.get(name, ()) is not None}
    axes = {name: values for name, values in axes.items() if values is not None}
    try:
        seeds = seeds_of(cfg["sweep"])
    except ConfigError as e:
        problems += e.problems
        seeds = []
    try:
        variants = variants_of(cfg, axes)
    except ConfigError as e:
        problems += e.problems
        variants = []

    size = len(variants) * len(seeds) * math.prod(len(values) for values in axes.values())
    if size > MAX_RUNS:  # refused before a list that size is built
        problems.append(f"sweep: the grid has {size:,} runs, more than {MAX_RUNS:,} in one sweep "
                        "(fewer seeds or axis values, or several sweeps)")
        variants = []
    runs, seen, checked = [], {}, set()
    names = list(axes)
    static = [i for i, name in enumerate(names) if name in STATIC]
    for v, variant in enumerate(variants):
        fixed = with_forward(base | variant)
        # a swept kind or depth decides each point's forward: ids then hashed one by one
        ids = RunIds(fixed, axes, exact=fixed.get("forward") == "factored"
                     and any(name in axes for name in FORWARD_DECIDES))
        for combo in itertools.product(*(range(len(values)) for values in axes.values())):
            point = with_forward(fixed | {name: axes[name][i] for name, i in zip(names, combo)})
            # cross_check reads bucket fields only: once per variant and swept bucket fields
            key = (v, *(combo[i] for i in static))
            if key not in checked:
                checked.add(key)
                for problem in cross_check(point):  # checked even when other fields are invalid
                    if problem not in problems:
                        problems.append(problem)
            if problems:  # no runs from an invalid config; the loop goes on to find every problem
                continue
            indices = dict(zip(names, combo))
            for seed in seeds:
                run = point | {"seed": seed, "data_seed": data_seed(point, seed)}
                run["run_id"] = ids(indices, seed, run["data_seed"])
                if run["run_id"] in seen:  # two variants that are the same model
                    problems.append(f"sweep.variants[{v}]: repeats runs of "
                                    f"sweep.variants[{seen[run['run_id']]}]")
                    break
                seen[run["run_id"]] = v
                runs.append(run)
    if problems:
        raise ConfigError(problems)
    for index, run in enumerate(runs):
        run["run_index"] = index
    return runs


def even_chunk_size(n_runs: int, size: int, n_devices: int = 1) -> int:
    """The chunk size of a bucket of n_runs cut into chunks of at most `size` (rounded up to a
    multiple of n_devices): the chunks made equal, the last one padded, so it compiles once."""
    n_chunks = math.ceil(n_runs / size)
    return n_devices * math.ceil(math.ceil(n_runs / n_chunks) / n_devices)


def chunks(runs: list[dict], size_of) -> list[list[dict]]:
    """The sweep's chunks: each bucket's runs, in order, cut every size_of(bucket's runs) runs."""
    out = []
    for bucket in buckets(runs).values():
        size = size_of(bucket)
        out += [bucket[i: i + size] for i in range(0, len(bucket), size)]
    return out


def buckets(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by bucket key, buckets and runs in a deterministic order."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(bucket_key(run), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))
