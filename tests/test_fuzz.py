"""Fuzzing the two doors input comes through: the command line (validated into a plan) and a
weights file (loaded and checked by the evaluator). Whatever is drawn, the answer is a clean
result or short errors naming a key: never a traceback, never a file written, never an
allocation beyond the input's own size."""
import os

import numpy as np
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasescan import overrides
from phasescan.runner.sweep import make_plan
from phasescan.core.config import ConfigError, compose
from phasescan.store import weights

KEYS = ["task.p", "task.train_frac", "task.split_seed", "task.op", "task.input_format",
        "model.d_model", "model.n_layers", "model.n_heads", "model.act", "model.attn_rate",
        "model.kind", "train.steps", "train.batch_size", "train.lr", "train.weight_decay",
        "train.beta1", "train.warmup_steps", "train.precision", "train.cross_entropy",
        "train.log_every", "sweep.seeds", "sweep.seed_start", "sweep.chunk_size",
        "sweep.vmap_group", "sweep.segment_steps", "sweep.checkpoint_every", "sweep.num_shards",
        "sweep.shard", "sweep.axes.attn_rate", "sweep.axes.d_model", "sweep.axes.lr",
        "sweep.axes.p", "metrics.grad_sym_triples", "metrics.n_circles",
        "metrics.key_freq_min_share", "classify.min_test_acc", "classify.circle_margin",
        "save_weights", "plot", "dry_run", "out_dir_taken", "nonsense", "task.bogus", "+extra",
        "+metrics.bogus"]
SCALARS = st.one_of(
    st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["null", "true", "relu", "gelu", "add", "div", "ab_sep", "auto", "all", "",
                     "linspace(0,1,3)", "linspace(0,1)", "uniform(a,b,c)", "geomspace(1,2,0)",
                     "logspace(5,9,5,2)", "loguniform(-1,1,3)", "accurate", "float32"]))


def render(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return str(value)


VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_any_command_line_gives_a_plan_or_short_errors(tmp_path_factory, pairs):
    args = [f"{key}={render(value)}" for key, value in pairs]
    cwd = tmp_path_factory.mktemp("fuzz")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        kept, problems = overrides.check(args)
        if not problems:
            try:
                make_plan(compose(*kept))
            except ConfigError as error:
                problems = error.problems
            except HydraException:  # Hydra's own syntax or type error: it reports it in a line
                return
        for problem in problems:
            assert "\n" not in problem and len(problem) < 600, problem
            assert "=" in problem or ":" in problem, problem  # names the key
        assert list(cwd.iterdir()) == []  # validation writes nothing
    finally:
        os.chdir(before)


ARRAY_KEYS = ["embed", "pos_embed", "unembed", "W_Q", "W_K", "W_V", "W_O", "W_in", "b_in",
              "W_out", "b_out", "W1", "b1", "p", "act", "attn_rate", "kind", "op", "train_frac",
              "data_seed", "input_format", "bogus"]


@st.composite
def arrays(draw):
    kind = draw(st.sampled_from(["f4", "i8", "U5", "O", "scalar_int", "scalar_float", "scalar_str"]))
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
    if kind == "scalar_int":
        return np.int64(draw(st.integers(-10**9, 10**9)))
    if kind == "scalar_float":
        return np.float32(draw(st.floats(width=32, allow_nan=True, allow_infinity=True)))
    if kind == "scalar_str":
        return np.str_(draw(st.sampled_from(["relu", "tanh", "add", "div", "ab", "transformer", ""])))
    if kind == "O":
        return np.array([{"a": 1}], dtype=object)
    return np.zeros(shape, dtype=kind)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(ARRAY_KEYS), arrays(), max_size=8),
       st.sampled_from(["npz", "truncated", "empty"]))
def test_any_weights_file_is_read_and_checked_or_refused_in_a_line(tmp_path, content, form):
    path = tmp_path / "w.npz"
    np.savez(path, **content) if content else path.write_bytes(b"PK")
    if form == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif form == "empty":
        path.write_bytes(b"")
    try:
        loaded = weights.load(path)
    except weights.UnreadableWeights as error:
        assert "\n" not in str(error) and "allow_pickle" not in str(error)
        return
    problems = weights.check(loaded)
    for problem in problems:
        assert "\n" not in problem and len(problem) < 400, problem
    if not problems:  # a consistent file: its arrays are as small as the file itself
        assert all(np.asarray(v).size < 10_000 for v in loaded.values())


# --- the Python API's config mappings, and a folder's config.yaml / manifest.json --------------------

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["relu", "add", "ab_sep", "auto", "all", "", "x", "linspace(0,1,3)",
                     "${train.steps}", "${nope}", "${oc.env:NOPE}", "/dev/null/x", "true"]))
VALUES_OR_LISTS = st.one_of(LEAVES, st.lists(LEAVES, max_size=3))
SECTION_KEYS = ["p", "train_frac", "split_seed", "op", "d_model", "n_heads", "attn_rate", "kind",
                "steps", "lr", "batch_size", "warmup_steps", "log_every", "seeds", "seed_start",
                "axes", "variants", "chunk_size", "num_shards", "shard", "min_test_acc",
                "grad_sym_triples", "n_circles", "linspace", "bogus"]
SECTIONS = st.dictionaries(
    st.sampled_from(SECTION_KEYS),
    st.one_of(VALUES_OR_LISTS, st.dictionaries(st.sampled_from(SECTION_KEYS), VALUES_OR_LISTS, max_size=3)),
    max_size=3)
TOP_KEYS = ["task", "model", "train", "sweep", "classify", "metrics", "refinement", "out_dir",
            "plot", "compile_cache", "save_weights", "tracking", "nonsense", 5]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(TOP_KEYS), st.one_of(VALUES_OR_LISTS, SECTIONS), max_size=4))
def test_any_python_api_mapping_gives_a_plan_or_short_errors(tmp_path_factory, mapping):
    """phasescan.run(mapping) up to training: configure, the folder's name, the plan."""
    import phasescan
    from phasescan import app

    cwd = tmp_path_factory.mktemp("api")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            cfg, _, _ = phasescan.configure(mapping)
            app.results_dir(cfg)
            make_plan(cfg)
        except ConfigError as error:
            for problem in error.problems:
                assert "\n" not in problem and len(problem) < 600, problem
                assert "=" in problem or ":" in problem, problem  # names the key
        assert list(cwd.iterdir()) == []  # validation writes nothing
    finally:
        os.chdir(before)


FRAGMENTS = st.sampled_from([
    "sweep:", " {a: [", "- 1", "x: ${oc.env:NOPE}", "task: {p: 11}", "classify: 5", "\n", "  ",
    ": :", "[", "]", "{", "}", '"', "'", "#", "&a", "*a", "!!python/object:os.system", "\x00",
    "${task.p}", "null", "1e400", "sweep: {name: x}", "metrics: [1]", "\t", "é"])
CONTENTS = st.one_of(st.lists(FRAGMENTS, max_size=6).map("".join), st.text(max_size=60),
                     st.binary(max_size=40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(CONTENTS, CONTENTS)
def test_any_config_yaml_or_manifest_is_read_or_refused_in_a_line(tmp_path, config, manifest):
    from phasescan.store import results

    for name, content, read in ((results.CONFIG, config, results.read_config),
                                (results.MANIFEST, manifest, results.read_manifest)):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        try:
            value = read(tmp_path)
        except ConfigError as error:
            assert len(error.problems) == 1 and "\n" not in error.problems[0], error.problems
            assert error.problems[0].startswith(str(path)), error.problems
            continue
        assert isinstance(value, dict), value
