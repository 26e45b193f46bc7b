"""The one boundary where configuration enters: the field registry and validation.

Every task/model/train field a sweep can set or sweep over is registered here once, with its
section, its type and whether it is *vmapped* (a per-model array inside one compiled program)
or *shape-changing* (it splits the grid into buckets, each compiled once).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from .classify import ADDED_THRESHOLDS, STEP_THRESHOLDS, THRESHOLDS
from .tasks import INPUT_FORMATS, OPS, is_prime, n_train

# The Hydra config groups ship inside the package (a wheel has them; ./conf links here).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # phasescan/conf/

# The model families (train.build_net): the paper's transformer and the authors' attention-free
# models A, B, C, D, X (linear.py). Listed here so validation needs no JAX.
MODEL_KINDS = ("transformer", "linear_a", "linear_b", "linear_c", "linear_d", "linear_x")
# Fields a model family does not read (linear.py has no attention and one hidden block): sweeping
# them trains the same model several times.
UNUSED_FIELDS = {kind: ("attn_rate", "n_layers", "n_heads") for kind in MODEL_KINDS if kind != "transformer"}


class ConfigError(ValueError):
    """A configuration mistake, reported to the user in one short line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# A field added after results were first recorded declares `default`: the value every earlier
# run had. A config, results row or weights file without the field reads as that value, and
# grid.run_id leaves the field out while a run sits at it, so earlier folders keep their run_ids
# and resume. Every field added from now on declares one (docs/columns.md, `run_id`).
ORIGINAL = object()  # Field.default of the fields that were there from the start (always present)


@dataclasses.dataclass(frozen=True)
class Field:
    section: str  # task | model | train
    type: type  # int | float | str
    vmapped: bool  # per-model array (True) or bucket key (False)
    check: Any = None  # value -> error text or None
    nullable: bool = False
    identity: bool = True  # part of the run_id (False: how a run is recorded, not what it trains)
    default: Any = ORIGINAL  # a field added later: the value of every run from before it (above)

    @property
    def added_later(self) -> bool:
        return self.default is not ORIGINAL

    def at_default(self, value) -> bool:
        """A field added later whose value is the one every earlier run had."""
        return self.added_later and value == self.default


def _in_unit_interval(v):
    return None if 0.0 <= v <= 1.0 else "must lie in [0, 1]"


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _train_frac(v):
    return None if 0.0 < v <= 1.0 else "must lie in (0, 1]"


# The smallest modulus whose metrics mean something. Circularity (metrics.circularity) measures
# the embedding's first 4 principal components against its p // 2 Fourier frequencies: with
# fewer frequencies than components (p < 8) a random, untrained embedding already scores as
# circular (p = 7: half of them reach min_circularity 0.6; p = 5: 95%; p = 8: 2.5%), and at
# p = 2 or 3 every embedding is a perfect circle and the test set is one or two pairs.
MIN_P = 8
# The fewest test pairs test_acc is measured on (train_frac = 1: none, acc over all pairs labels
# instead): below, one pair moves test_acc by more than 10%, past min_test_acc's margin.
MIN_TEST_PAIRS = 10
# Seeds are JAX random keys, 32 bits: a larger one overflows when the chunk's keys are built.
MAX_SEED = 2**32 - 1


def _modulus(v):
    if v >= MIN_P:
        return None
    return (f"must be >= {MIN_P}: with fewer than 4 Fourier frequencies (p // 2) for circularity's "
            "4 principal components, an untrained model already looks circular")


def _seed(v):
    return None if 0 <= v <= MAX_SEED else f"must lie in 0..{MAX_SEED} (a 32-bit JAX random seed)"


def split_problems(p: int, train_frac: float, where: str = "task.") -> list[str]:
    """Why the train/test split of p^2 pairs at train_frac means nothing (empty: it is fine).
    `where` prefixes the key names (a weights file's scalars have none)."""
    n_pairs = p * p
    n_pairs_train = n_train(n_pairs, train_frac)
    n_test = n_pairs - n_pairs_train
    if n_pairs_train < 1:
        return [f"{where}train_frac={train_frac}: leaves no train pair at {where}p={p} "
                f"(needs >= 1/p^2 = {1 / n_pairs:.3g})"]
    if 0 < n_test < MIN_TEST_PAIRS:
        most = math.floor((n_pairs - MIN_TEST_PAIRS) / n_pairs * 1e4) / 1e4
        return [f"{where}train_frac={train_frac}: leaves {n_test} test pair{'s' * (n_test > 1)} at "
                f"{where}p={p}; test_acc needs >= {MIN_TEST_PAIRS} (train_frac <= {most}, or 1.0: "
                "no test set, accuracy over all pairs labels the model)"]
    return []


# train.dynamics_every's default: the test forward of the dynamics columns every step
# (docs/metrics.md, "Generalisation dynamics": what it costs and why this default).
DYNAMICS_EVERY = 1
PRECISIONS = ("float32", "tf32", "bfloat16")  # train.precision (phasescan/engine/precision.py)
# model.forward (phasescan/engine/model.py): through per-token tables, or every pair through the
# layers. Only a one-layer transformer has the factored one: other models run direct (grid.expand).
FORWARDS = ("factored", "direct")
CROSS_ENTROPIES = ("accurate", "float32")  # train.cross_entropy (phasescan/engine/loss.py): the paper's, the ablation


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


FIELDS: dict[str, Field] = {
    # task
    "p": Field("task", int, False, _modulus),
    # A bucket field: it sets the number of train pairs, the shape of the training batch.
    "train_frac": Field("task", float, False, _train_frac),
    "split_seed": Field("task", int, True, _seed, nullable=True),
    "op": Field("task", str, False, _one_of(*OPS)),
    "input_format": Field("task", str, False, _one_of(*INPUT_FORMATS)),
    # model
    "kind": Field("model", str, False, _one_of(*MODEL_KINDS)),
    "d_model": Field("model", int, False, _positive),
    "n_layers": Field("model", int, False, lambda v: None if 1 <= v <= 4 else "must lie in 1..4"),
    "n_heads": Field("model", int, False, _positive),
    "act": Field("model", str, False, _one_of("relu", "gelu")),
    "attn_rate": Field("model", float, True, _in_unit_interval),
    # every initial weight multiplied by it, biases as initialised (Omnigrok's axis); added later
    "init_scale": Field("model", float, True, _positive, default=1.0),
    # the same function computed two ways, rounded differently; added later (every earlier run: direct)
    "forward": Field("model", str, False, _one_of(*FORWARDS), default="direct"),
    # train
    "steps": Field("train", int, False, _positive),
    "batch_size": Field("train", int, False, _positive, nullable=True),
    "lr": Field("train", float, True, _positive),
    "weight_decay": Field("train", float, True, _non_negative),
    "beta1": Field("train", float, True, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "beta2": Field("train", float, True, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "warmup_steps": Field("train", int, True, _non_negative),
    "precision": Field("train", str, False, _one_of(*PRECISIONS)),
    "cross_entropy": Field("train", str, False, _one_of(*CROSS_ENTROPIES)),
    # metrics every log_every steps during training (0 / null = off): phasescan/store/history.py
    "log_every": Field("train", int, False, _non_negative, nullable=True, identity=False),
    # test accuracy of the dynamics columns every K steps (train accuracy: every step); added later
    "dynamics_every": Field("train", int, False, _positive, identity=False, default=DYNAMICS_EVERY),
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
    if field.type is float and not math.isfinite(value):  # inf / nan would only diverge
        raise ConfigError(f"{where}={value!r}: must be a finite number")
    problem = field.check(value) if field.check else None
    if problem:
        raise ConfigError(f"{where}={value!r}: {problem}")
    return value


def cross_check(run: dict) -> list[str]:
    """Constraints between fields of one run (those whose fields are all in `run`: the others
    are missing because they are invalid, which is reported on its own). It reads bucket
    fields (STATIC) only: grid.expand checks it once per bucket."""
    problems = []
    has = lambda *names: all(name in run for name in names)
    kind = run.get("kind")  # None when model.kind itself is invalid
    if has("d_model", "n_heads") and kind == "transformer" and run["d_model"] % run["n_heads"]:
        problems.append(
            f"model.d_model={run['d_model']}: must be divisible by model.n_heads={run['n_heads']}")
    if has("input_format") and kind not in (None, "transformer") and run["input_format"] != "ab":
        problems.append(
            f"model.kind={kind}: reads the two tokens [a, b]; needs task.input_format=ab "
            f"(got {run['input_format']}; linear_x is the model with separate tables for a and b)")
    if has("d_model") and kind == "linear_d" and run["d_model"] % 2:
        problems.append(f"model.d_model={run['d_model']}: must be even for model.kind=linear_d "
                        "(two embeddings of width d_model / 2 are concatenated)")
    if has("op", "p") and OPS[run["op"]].needs_prime and not is_prime(run["p"]):
        problems.append(f"task.p={run['p']}: must be prime for task.op={run['op']}")
    if has("log_every", "steps") and run["log_every"] and run["steps"] % run["log_every"]:
        problems.append(f"train.log_every={run['log_every']}: must divide train.steps={run['steps']}")
    if not has("train_frac", "p", "batch_size"):
        return problems
    n_pairs = n_train(run["p"] ** 2, run["train_frac"])  # the split's size
    split = split_problems(run["p"], run["train_frac"])
    problems += split
    if not split and run["batch_size"] is not None and run["batch_size"] > n_pairs:
        problems.append(f"train.batch_size={run['batch_size']}: must be <= the {n_pairs} train "
                        f"pairs of task.p={run['p']}, task.train_frac={run['train_frac']} (or null)")
    return problems


def is_int(v) -> bool:
    """An integer value, not a bool (YAML's true is a Python int)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_options(cfg: dict) -> list[str]:
    """Problems of the settings that are not fields: chunk sizes, metric options, classify
    thresholds, output options. (Fields and axes are checked by grid.expand.)"""
    problems = []
    sweep = cfg.get("sweep") or {}

    def need(ok: bool, where: str, value, allowed: str):
        if not ok:
            problems.append(f"{where}={value!r}: must be {allowed}")

    size = sweep.get("chunk_size", "auto")
    need(size == "auto" or is_int(size) and size > 0, "sweep.chunk_size", size,
         "auto or a positive integer (models per compiled program)")
    size = sweep.get("max_chunk_size", 1024)
    need(is_int(size) and size > 0, "sweep.max_chunk_size", size, "a positive integer")
    group = sweep.get("vmap_group")
    need(group is None or is_int(group) and group > 0, "sweep.vmap_group", group,
         "null (all of a device's models side by side) or a positive integer")
    seed = sweep.get("sample_seed", 0)
    need(is_int(seed) and seed >= 0, "sweep.sample_seed", seed, "a non-negative integer")
    segment = sweep.get("segment_steps")
    need(segment is None or is_int(segment) and segment > 0, "sweep.segment_steps", segment,
         "null (500) or a positive integer (steps per device call)")
    every = sweep.get("checkpoint_every", 300)
    need(is_number(every) and every >= 0, "sweep.checkpoint_every", every,
         "a number of seconds >= 0 (0: after every segment)")

    metric_opts = cfg.get("metrics") or {}
    n = metric_opts.get("grad_sym_triples", 300)
    need(n == "all" or is_int(n) and n > 0, "metrics.grad_sym_triples", n,
         'a positive integer or "all"')
    seed = metric_opts.get("triples_seed", 0)
    need(is_int(seed) and seed >= 0, "metrics.triples_seed", seed, "a non-negative integer")
    circles = metric_opts.get("n_circles", 3)
    need(is_int(circles) and 0 <= circles <= 8, "metrics.n_circles", circles,
         "an integer in 0..8 (circles measured per model; 0 = off)")
    share = metric_opts.get("key_freq_min_share", 0.1)
    need(is_number(share) and 0 < share <= 1, "metrics.key_freq_min_share", share,
         "a number in (0, 1]")

    thresholds = cfg.get("classify") or {}
    for key in thresholds:
        if key not in THRESHOLDS:
            problems.append(f"classify.{key}: unknown threshold (allowed: {', '.join(THRESHOLDS)})")
    for key in THRESHOLDS:
        if key not in thresholds:
            if key not in ADDED_THRESHOLDS:  # one added later: its default (classify.py)
                problems.append(f"classify.{key}: missing")
        elif key in STEP_THRESHOLDS:
            need(is_number(thresholds[key]) and thresholds[key] >= 0, f"classify.{key}",
                 thresholds[key], "a number of steps >= 0")
        else:
            need(is_number(thresholds[key]) and 0 <= thresholds[key] <= 1, f"classify.{key}",
                 thresholds[key], "a number in [0, 1]")

    save = cfg.get("save_weights", "none")
    need(save in ("none", "all", None) or is_int(save) and save > 0, "save_weights", save,
         "none, all or a positive integer (the number of seeds per grid cell whose weights are kept)")
    need(isinstance(cfg.get("plot", False), bool), "plot", cfg.get("plot"), "true or false")
    need(isinstance(cfg.get("dry_run", False), bool), "dry_run", cfg.get("dry_run"), "true or false")
    need(isinstance(cfg.get("deterministic", True), bool), "deterministic", cfg.get("deterministic"),
         "true or false")
    taken = cfg.get("out_dir_taken", "refuse")
    need(taken in ("refuse", "sibling"), "out_dir_taken", taken,
         "refuse (stop if out_dir holds another sweep) or sibling (use a fresh folder next to it)")
    problems += tracking_problems(cfg)
    problems += path_problems(cfg)
    return problems


def path_problems(cfg: dict) -> list[str]:
    """out_dir (null or a folder path) and compile_cache (null / false, or a folder that exists
    or can be created): checked without creating anything."""
    problems = []
    out_dir = cfg.get("out_dir")
    if out_dir is not None and not (isinstance(out_dir, str) and out_dir.strip()):
        problems.append(f"out_dir={out_dir!r}: must be null (results/<sweep.name>/<time>/) or a "
                        "folder path (a non-empty string)")
    cache = cfg.get("compile_cache")
    if cache in COMPILE_CACHE_OFF:
        return problems
    if not isinstance(cache, str):
        problems.append(f"compile_cache={cache!r}: must be a folder path (default "
                        f"{DEFAULT_COMPILE_CACHE}) or null / false (no persistent cache)")
        return problems
    problem = unusable_folder(Path(os.path.expanduser(cache)))
    if problem:
        problems.append(f"compile_cache={cache}: {problem}; choose another folder, or "
                        "compile_cache=null (no persistent cache)")
    return problems


# compile_cache values that turn the cache off (engine/compile_cache.enable)
COMPILE_CACHE_OFF = (None, False, "", "null", "none", "false")
DEFAULT_COMPILE_CACHE = "~/.cache/phasescan/jax"


def unusable_folder(path: Path) -> str | None:
    """Why `path` cannot be used as a folder phasescan writes into (None: it exists as a
    writable folder, or can be created), found without creating anything."""
    if path.exists():
        if not path.is_dir():
            return "is a file, not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
    parent = path
    while not parent.exists():  # the nearest existing ancestor decides
        if parent.parent == parent:
            return "cannot be created"
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


TRACKERS = ("none", "wandb")
TRACKING_OPTIONS = ("project", "entity", "mode", "group", "tags", "dir")
WANDB_MODES = (None, "online", "offline", "disabled")


def tracking_problems(cfg: dict) -> list[str]:
    """`tracking` (none | wandb) and its `tracking_options` (phasescan/store/tracking.py)."""
    tracking = cfg.get("tracking", "none")
    if tracking not in TRACKERS:
        return [f"tracking={tracking!r}: must be none or wandb (log each run to Weights & Biases)"]
    if tracking == "none":
        return []
    import importlib.util  # finds wandb without importing it
    if importlib.util.find_spec("wandb") is None:
        return ['tracking=wandb: wandb is not installed; pip install "phasescan[wandb]"']
    options = cfg.get("tracking_options") or {}
    problems = [f"tracking_options.{key}: unknown option (allowed: {', '.join(TRACKING_OPTIONS)})"
                for key in options if key not in TRACKING_OPTIONS]
    for key in ("project", "entity", "group", "dir"):
        value = options.get(key)
        if not (value is None or isinstance(value, str) and value.strip()):
            problems.append(f"tracking_options.{key}={value!r}: must be null or a non-empty string")
    if options.get("mode") not in WANDB_MODES:
        problems.append(f"tracking_options.mode={options.get('mode')!r}: must be null (wandb's "
                        f"default: WANDB_MODE or online), online, offline or disabled")
    tags = options.get("tags")
    if not (tags is None or isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags)):
        problems.append(f"tracking_options.tags={tags!r}: must be null or a list of strings")
    return problems


def merge_mapping(base: dict, overrides, where: str = "") -> dict:
    """`overrides` (a mapping, whole or partial) merged onto the composed config `base`, as
    OmegaConf.merge would, checked on the way: every key must be one of `base` (the defaults
    have them all), a section stays a mapping, a folder path becomes a string. Raises
    ConfigError naming each bad key and what its section allows."""
    from collections.abc import Mapping

    problems, merged = [], dict(base)
    for key, value in overrides.items():
        name = f"{where}{key}"
        if key not in base:
            allowed = ", ".join(map(str, base)) or "none"
            what = "axis" if where == "sweep.axes." else "key"
            problems.append(f"{name}: unknown {what} (allowed: {allowed})")
        elif isinstance(base[key], dict):  # a section (task, sweep, sweep.axes, ...)
            if not isinstance(value, Mapping):
                hint = (f"; to choose a {key} config pass a list of overrides: ['{key}={value}']"
                        if isinstance(value, str) and key in ("sweep", "task", "model", "train", "classify")
                        else "")
                problems.append(f"{name}={value!r}: expected a mapping of "
                                f"{', '.join(map(str, base[key])) or 'keys'}{hint}")
                continue
            try:
                merged[key] = merge_mapping(base[key], value, f"{name}.")
            except ConfigError as error:
                problems += error.problems
        else:
            merged[key] = str(value) if isinstance(value, os.PathLike) else plain(value)
    if problems:
        raise ConfigError(problems)
    return merged


def plain(value):
    """A mapping's value as plain Python containers (a DictConfig's, a tuple)."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def compose(*overrides: str) -> dict:
    """The resolved config as a plain dict, exactly as `python -m phasescan OVERRIDES` sees it
    (for tools and tests, and inside the running app: its Hydra is set aside meanwhile)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton
    from omegaconf import OmegaConf

    running = Singleton._instances.pop(GlobalHydra, None)  # the app's, when called from inside it
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)
    finally:
        if running is not None:
            Singleton._instances[GlobalHydra] = running


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {"section.key": value}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


# What decides a sweep's rows (its identity: the runs, how they are measured and labelled)
IDENTITY_KEYS = ("task", "model", "train", "metrics", "classify", "sweep.seeds", "sweep.seed_start",
                 "sweep.sample_seed", "sweep.axes", "sweep.variants")


def identity_differences(old: dict, new: dict) -> list[str]:
    """The flattened keys of IDENTITY_KEYS where two configs differ, as `key: old -> new`."""
    def kept(cfg):
        return {k: v for k, v in flatten(cfg).items()
                if any(k == key or k.startswith(key + ".") for key in IDENTITY_KEYS)}
    a, b = kept(old), kept(new)
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)]
