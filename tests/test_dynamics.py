"""Generalisation dynamics carried through the training scan (train.DynamicsState), the learning
phase beside the algorithm (classify.learning_phase) and model.init_scale."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import compose

from phasescan.engine.chunk import compile_chunk, run_chunk
from phasescan.engine.train import (DynamicsRows, DynamicsState, HParams, Spec, least_count,
                                    make_program)
from phasescan.runner.sweep import run_sweep, sweep_identity
from phasescan.core import classify, grid
from phasescan.store import checkpoint, results

DYNAMICS = ["memorize_step", "generalize_step", "perfect_train_step", "perfect_test_step",
            "generalization_delay"]
STEPS = DYNAMICS[:4]


# --- the statistic on hand-built accuracy sequences ------------------------------------------

def python_dynamics(train: list[int], test: list[int], rows: DynamicsRows, start: int = 0) -> dict:
    """The authors' logging as a plain loop over the same counts of right rows (float64):
    accuracy = count / rows; -1 in `test` = not measured at that step (the best so far holds)."""
    out = dict.fromkeys(STEPS, -1)
    best_train = best_test = 0.0
    delay = 0.0
    for t, (right, right_test) in enumerate(zip(train, test), start):
        acc = right / rows.train
        if out["memorize_step"] < 0 and acc >= rows.learned:
            out["memorize_step"] = t
        if out["perfect_train_step"] < 0 and acc == 1.0:
            out["perfect_train_step"] = t
        best_train = max(best_train, acc)
        if right_test >= 0:
            acc_test = right_test / rows.test
            if out["generalize_step"] < 0 and acc_test >= rows.learned:
                out["generalize_step"] = t
            if out["perfect_test_step"] < 0 and acc_test == 1.0:
                out["perfect_test_step"] = t
            best_test = max(best_test, acc_test)
        delay += best_train - best_test
    return out | {"generalization_delay": delay}


def scan(train: jax.Array, test: jax.Array, rows: DynamicsRows, start, state) -> DynamicsState:
    def body(state, x):
        step, right, right_test = x
        return state.update(step, right, right_test, rows), None
    steps = start + jnp.arange(len(train), dtype=jnp.int32)
    return jax.lax.scan(body, state, (steps, train, test))[0]


jitted_scan = jax.jit(scan, static_argnums=2)


def scanned(train, test, rows: DynamicsRows, start: int = 0, state=None) -> DynamicsState:
    """The statistic over a sequence in one jitted lax.scan, as the training scan carries it."""
    state = DynamicsState.start() if state is None else state
    return jitted_scan(jnp.asarray(train, jnp.int32), jnp.asarray(test, jnp.int32), rows,
                       jnp.int32(start), state)


def columns(state: DynamicsState, rows: DynamicsRows | None = None) -> dict:
    return {name: np.asarray(v).item() for name, v in state.columns(rows or ROWS).items()}


def ramp(n: int, rows: int, at: int, length: int) -> list[int]:
    """Counts rising linearly from 0 at step `at` to all `rows` right `length` steps later."""
    return [int(np.clip((t - at) / length, 0, 1) * rows) for t in range(n)]


ROWS = DynamicsRows(train=115, test=54, learned=0.9)  # 115: a float mean of 115 ones is not 1
SEQUENCES = {
    # memorises at once, generalises ~150 steps later, perfect test accuracy later still
    "groks": (ramp(400, 115, 5, 20), ramp(400, 54, 150, 60)),
    # never reaches the threshold on either: every step -1, the delay the sum of the gaps
    "never": ([int(0.5 * 115)] * 300, [10] * 300),
    "train only": (ramp(300, 115, 0, 30), [3] * 300),
    # right from step 0 (a step 0 that counts, not -1)
    "at step 0": ([115] * 50, [54] * 50),
    # the test pairs measured every 7 steps only (train.dynamics_every=7): -1 between
    "every 7": (ramp(300, 115, 5, 20), [c if t % 7 == 0 else -1 for t, c in enumerate(ramp(300, 54, 90, 50))]),
    # accuracies that go down again: the first steps and the best so far stay
    "noisy": (list(np.random.default_rng(0).integers(80, 116, 500)),
              list(np.random.default_rng(1).integers(0, 55, 500))),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_the_statistic_equals_a_plain_loop(name):
    train, test = SEQUENCES[name]
    got, want = columns(scanned(train, test, ROWS)), python_dynamics(train, test, ROWS)
    assert {k: got[k] for k in STEPS} == {k: want[k] for k in STEPS}
    assert got["generalization_delay"] == pytest.approx(want["generalization_delay"], rel=1e-6, abs=1e-6)


def test_the_named_steps_of_the_sequences():
    train, test = SEQUENCES["groks"]
    got = columns(scanned(train, test, ROWS))
    # ramp(.., at, length): count(t) = floor((t - at) / length * rows), learned at 104 of 115
    # (t - 5 = 19: 109) and at 49 of 54 (t - 150 = 55: 49.5); all right at t - at = length
    assert got["memorize_step"] == 24 and got["perfect_train_step"] == 25
    assert got["generalize_step"] == 205 and got["perfect_test_step"] == 210
    assert columns(scanned(*SEQUENCES["at step 0"], ROWS)) == dict.fromkeys(STEPS, 0) | {"generalization_delay": 0.0}
    never = columns(scanned(*SEQUENCES["never"], ROWS))
    assert [never[k] for k in STEPS] == [-1] * 4
    assert never["generalization_delay"] == pytest.approx(300 * (57 / 115 - 10 / 54), rel=1e-6)
    only = columns(scanned(*SEQUENCES["train only"], ROWS))
    assert only["memorize_step"] == 28 and only["generalize_step"] == only["perfect_test_step"] == -1
    # measured every 7 steps: the test steps are the first measured ones at or after the exact
    every = columns(scanned(*SEQUENCES["every 7"], ROWS))
    exact = columns(scanned(SEQUENCES["every 7"][0], ramp(300, 54, 90, 50), ROWS))
    for name in ("generalize_step", "perfect_test_step"):
        assert every[name] % 7 == 0 and exact[name] <= every[name] < exact[name] + 7


def test_the_learned_threshold_is_an_exact_count():
    assert least_count(115, 0.9) == 104 and 103 / 115 < 0.9 <= 104 / 115
    assert least_count(10, 0.9) == 9  # 9 / 10 == 0.9: reached, as Python compares it
    assert least_count(115, 1.0) == 115 and least_count(115, 0.0) == 0
    # 115 train pairs: 115 of 115 right is perfect (a float32 mean would give 0.99999994)
    assert columns(scanned([114, 115], [0, 0], ROWS))["perfect_train_step"] == 1


def test_the_delay_keeps_float32_precision_over_many_steps():
    """Summed exactly: 50,000 steps of a gap that float32 cannot add exactly, within 1e-6 of
    float64 (a float32 running sum of the float32 gap is off by 14.5 here)."""
    n = 50_000
    rows = DynamicsRows(train=2784, test=697, learned=0.9)
    train, test = [2700] * n, [1] * n
    got = columns(scanned(train, test, rows), rows)["generalization_delay"]
    assert got == pytest.approx(n * (2700 / 2784 - 1 / 697), rel=1e-6)


def test_vmapped_equals_alone():
    names = ["groks", "noisy", "every 7"]
    length = 300
    train = jnp.asarray([SEQUENCES[n][0][:length] for n in names], jnp.int32)
    test = jnp.asarray([SEQUENCES[n][1][:length] for n in names], jnp.int32)
    start = DynamicsState.start()
    together = jax.jit(jax.vmap(lambda a, b: scan(a, b, ROWS, 0, start)))(train, test)
    for i in range(len(names)):
        alone = scanned(train[i], test[i], ROWS)
        for name, value in alone._asdict().items():
            np.testing.assert_array_equal(getattr(together, name)[i], value, err_msg=f"{names[i]}: {name}")


@pytest.mark.parametrize("name", ["groks", "every 7", "noisy"])
def test_segments_equal_one_call_with_a_step_on_the_border(name):
    """Split the sequence where a named step lands (the first step of the second segment, and
    the last of the first): the carried state gives the numbers of one call, bit for bit."""
    train, test = SEQUENCES[name]
    whole = scanned(train, test, ROWS)
    borders = {int(v) + shift for v in np.asarray(whole[:4]) if v > 0 for shift in (0, 1)}
    for border in sorted(borders) + [len(train) // 3]:
        first = scanned(train[:border], test[:border], ROWS)
        both = scanned(train[border:], test[border:], ROWS, start=border, state=first)
        for field, value in whole._asdict().items():
            np.testing.assert_array_equal(getattr(both, field), value, err_msg=f"border {border}: {field}")


# --- the learning phase ------------------------------------------------------------------

def phases(memorize, generalize, test_acc=0.5, diverged=False, delay=100):  # delay: a round test value
    n = len(memorize)
    metrics = {"memorize_step": memorize, "generalize_step": generalize,
               "test_acc": np.broadcast_to(test_acc, n), "diverged": np.broadcast_to(diverged, n)}
    return list(classify.learning_phase(metrics, {"grokking_delay": delay}))


def test_the_learning_phase_rule():
    assert phases([-1, 50, 50, 50, 50, 0], [-1, -1, 150, 151, 60, 0]) == [
        "confusion", "memorization", "comprehension", "grokking", "comprehension", "comprehension"]
    assert phases([-1], [20]) == ["confusion"]  # never memorised, whatever the test pairs did
    assert phases([50, 50], [151, 151], delay=200) == ["comprehension"] * 2
    assert phases([50], [151], diverged=True) == ["diverged"]
    # no test pairs (train_frac = 1): judged on the train pairs, which are all pairs
    assert phases([50, -1], [-1, -1], test_acc=np.nan) == ["comprehension", "confusion"]
    # rows of a table from before the dynamics: no phase
    assert phases([np.nan], [np.nan]) == [None]


def test_grokking_delay_is_validated_and_added_later():
    from phasescan.core.config import check_options
    cfg = compose()
    assert cfg["classify"]["grokking_delay"] == classify.GROKKING_DELAY
    assert not check_options(cfg)
    assert any("grokking_delay" in p for p in check_options(cfg | {"classify": cfg["classify"] | {"grokking_delay": -1}}))
    # a config from before it (an older config.yaml) is valid and reads as the default
    older = {k: v for k, v in cfg["classify"].items() if k != "grokking_delay"}
    assert not check_options(cfg | {"classify": older})
    assert classify.identity(cfg["classify"]) == older
    assert classify.identity(cfg["classify"] | {"grokking_delay": 500}) != older


# --- in the engine --------------------------------------------------------------------------

# p = 17, d = 32 memorises within ~200 steps (measured: docs/metrics.md, "Learning phases")
FAST = ["task.p=17", "model.d_model=32", "train.steps=260", "sweep.seeds=1", "plot=false",
        "sweep.axes.attn_rate=[0.0,1.0]", "metrics.grad_sym_triples=20", "metrics.n_circles=0"]


@pytest.fixture(scope="module")
def fast():
    cfg = compose(*FAST)
    runs = grid.expand(cfg)
    spec = Spec.from_run(runs[0])
    return cfg, runs, spec, run_chunk(compile_chunk(spec, len(runs), cfg["metrics"]), runs, len(runs))


def test_segments_equal_one_call_in_the_engine(fast):
    """The chunk advanced in segments whose border is a model's memorize_step (that step opens
    the second segment) gives the columns of one call, bit for bit."""
    cfg, runs, spec, whole = fast
    border = int(whole["memorize_step"].max())
    assert 0 < border < spec.steps, whole["memorize_step"]
    pieces = run_chunk(compile_chunk(spec, len(runs), cfg["metrics"], segment=border), runs, len(runs))
    for name in DYNAMICS + ["train_loss", "param_norm"]:
        np.testing.assert_array_equal(pieces[name], whole[name], err_msg=name)


def test_vmapped_equals_alone_in_the_engine(fast):
    """The chunk's models trained alone: the same steps. (The programs differ, so the logits
    agree to float32 rounding only, and a pair at a near-tie may count right in one and wrong in
    the other at some step: the delay agrees to a few pair-steps, 1 / 58 each here.)"""
    cfg, runs, spec, whole = fast
    alone_fn = compile_chunk(spec, 1, cfg["metrics"])
    for i, run in enumerate(runs):
        alone = run_chunk(alone_fn, [run], 1)
        for name in STEPS:
            assert alone[name][0] == whole[name][i], name
        np.testing.assert_allclose(alone["generalization_delay"][0], whole["generalization_delay"][i], atol=0.1)


def test_dynamics_every_k_leaves_training_alone(fast):
    """train.dynamics_every=K: the same models (the test forward never feeds the update), the
    same train steps, the test steps exact to K steps."""
    cfg, runs, spec, whole = fast
    k = 9
    every = run_chunk(compile_chunk(Spec.from_run(runs[0] | {"dynamics_every": k}), len(runs),
                                    cfg["metrics"]), runs, len(runs))
    for name in ["train_loss", "test_loss", "param_norm", "grad_sym", "memorize_step", "perfect_train_step"]:
        np.testing.assert_array_equal(every[name], whole[name], err_msg=name)
    for name in ("generalize_step", "perfect_test_step"):
        reached = whole[name] >= 0
        assert (every[name][reached] % k == 0).all() and (every[name][reached] >= whole[name][reached]).all()


def test_no_test_pairs_give_nan_and_minus_one(tmp_path):
    runs = run_sweep(compose(*FAST, "task.train_frac=1.0", "train.steps=200"), tmp_path / "all")
    assert (runs["generalize_step"] == -1).all() and (runs["perfect_test_step"] == -1).all()
    assert runs["generalization_delay"].isna().all()
    assert (runs["memorize_step"] >= 0).all()
    assert set(runs["learning_phase"]) == {"comprehension"}
    assert runs["learning_phase"].dtype == results.TYPES["learning_phase"][1]


# --- science: a known outcome of each learning phase ------------------------------------

# p = 23, d = 64, attention rate 0, seed 2 (docs/metrics.md, "Learning phases": the init_scale x
# lr grid these come from, every seed labelled alike): Omnigrok's large initialisation groks
# (memorised at step 136, generalised at 528), the same at lr 3e-3 comprehends (180 -> 216), and
# lr 1e-5 never fits.
SCIENCE = ["task.p=23", "model.d_model=64", "train.steps=700", "sweep.axes.attn_rate=[0.0]",
           "sweep.seed_start=2", "sweep.seeds=1", "plot=false", "metrics.grad_sym_triples=20",
           "metrics.n_circles=0",
           "sweep.variants=[{init_scale:2.0,lr:0.001},{init_scale:2.0,lr:0.003},{lr:0.00001}]"]


@pytest.mark.slow
def test_a_grokking_a_comprehending_and_a_confused_model(tmp_path):
    runs = run_sweep(compose(*SCIENCE), tmp_path / "phases")
    groks, comprehends, confused = (row for _, row in runs.iterrows())
    delay = classify.GROKKING_DELAY
    assert groks["learning_phase"] == "grokking", groks[DYNAMICS].to_dict()
    assert groks["generalize_step"] - groks["memorize_step"] > delay + 100  # well after
    assert comprehends["learning_phase"] == "comprehension", comprehends[DYNAMICS].to_dict()
    assert 0 <= comprehends["generalize_step"] - comprehends["memorize_step"] < delay - 100
    assert confused["learning_phase"] == "confusion" and confused["memorize_step"] == -1
    # the delay tells the two that generalised apart too (the confused one has no gap to sum:
    # its train accuracy stays as low as its test accuracy); both learned an algorithm
    assert comprehends["generalization_delay"] < groks["generalization_delay"]
    assert (runs["test_acc"][:2] > 0.95).all() and runs["algorithm"].iloc[2] == "unlearned"


# --- model.init_scale --------------------------------------------------------------------

def test_init_scale_multiplies_every_weight_and_no_bias():
    spec = Spec(p=11, train_frac=0.8, d_model=16, n_layers=1, n_heads=4, act="relu", steps=1, batch_size=None)
    program = make_program(spec)
    hp = lambda scale: HParams(jnp.uint32(0), *(jnp.float32(x) for x in (1.0, 1e-3, 2.0, 0.9, 0.98, 10, scale)))
    key = jax.random.key(0)
    one, three = program.init(key, hp(1.0)).params, program.init(key, hp(3.0)).params
    flat_one = jax.tree_util.tree_leaves_with_path(one)
    for (path, a), b in zip(flat_one, jax.tree_util.tree_leaves(three)):
        expected = a * 3.0 if a.ndim >= 2 else a
        np.testing.assert_array_equal(b, expected, err_msg=jax.tree_util.keystr(path))
    assert sum(a.ndim == 1 for _, a in flat_one) == 2  # b_in, b_out: zero, and still zero
    assert all(not np.any(a) for _, a in flat_one if a.ndim == 1)


# Recorded from today's main (commit 38167c9, before init_scale and the dynamics) with
# jax/jaxlib 0.10.2 on CPU: the run_ids, the sweep identity and training's numbers of
# GOLDEN (float.hex of the float32 values), of the direct forward (model.forward=factored, added
# later, rounds differently). Bit for bit on that CPU; on another, a reduction may round its last
# bit differently (seen: dist_irr, 1 ulp on an Intel Xeon with AMX): 2 ulp allowed.
GOLDEN = ["task.p=11", "model.d_model=16", "model.forward=direct", "train.steps=60", "sweep.seeds=1",
          "sweep.axes.attn_rate=[0.0,1.0]", "plot=false", "metrics.grad_sym_triples=50"]
MAIN = {
    "run_ids": ["f97c3b57b3a8", "46fd2a1f21b2"], "identity": "40def9b6a25412f5",
    "train_loss": ["0x1.247b2e0000000p+1", "0x1.268f0e0000000p+1"],
    "test_loss": ["0x1.664c760000000p+1", "0x1.6ad7a20000000p+1"],
    "grad_sym": ["0x1.e8e48c0000000p-2", "0x1.b6d62e0000000p-3"],
    "dist_irr": ["0x1.d82f440000000p-1", "0x1.d7e3280000000p-1"],
    "circularity": ["0x1.fef12c0000000p-2", "0x1.dc95000000000p-2"],
    "param_norm": ["0x1.7b9e2e0000000p+3", "0x1.7de7940000000p+3"],
}


def test_init_scale_one_is_todays_main():
    """At its default the new field leaves run_ids, the sweep identity (the folders resume) and
    training's numbers as main had them; any other value is another run."""
    cfg = compose(*GOLDEN)
    runs = grid.expand(cfg)
    assert [r["run_id"] for r in runs] == MAIN["run_ids"] and all(r["init_scale"] == 1.0 for r in runs)
    assert sweep_identity(runs, cfg) == MAIN["identity"]
    got = run_chunk(compile_chunk(Spec.from_run(runs[0]), 2, cfg["metrics"]), runs, 2)
    for name in ("train_loss", "test_loss", "grad_sym", "dist_irr", "circularity", "param_norm"):
        main = np.array([float.fromhex(x) for x in MAIN[name]], np.float32)
        np.testing.assert_array_max_ulp(np.asarray(got[name], np.float32), main, maxulp=2)
    # swept, the default keeps today's ids and another value makes new ones; the fast path of
    # grid.RunIds and run_id agree
    swept = grid.expand(compose(*GOLDEN, "sweep.axes.init_scale=[1.0,0.5]"))
    assert [r["run_id"] for r in swept if r["init_scale"] == 1.0] == MAIN["run_ids"]
    assert len({r["run_id"] for r in swept}) == 4
    assert all(grid.run_id(r) == r["run_id"] for r in swept)
    other = grid.expand(compose(*GOLDEN, "model.init_scale=0.5"))
    assert [r["run_id"] for r in other] == [r["run_id"] for r in swept if r["init_scale"] == 0.5]


def test_rows_and_configs_from_before_the_field_read_as_its_default():
    cfg = compose(*GOLDEN)
    row = {k: v for k, v in grid.expand(cfg)[0].items() if k not in ("init_scale", "dynamics_every")}
    run = grid.run_from_row(pd.Series(row))
    assert run["init_scale"] == 1.0 and run["run_id"] == MAIN["run_ids"][0]
    older = cfg | {"model": {k: v for k, v in cfg["model"].items() if k != "init_scale"},
                   "train": {k: v for k, v in cfg["train"].items() if k != "dynamics_every"}}
    assert [r["run_id"] for r in grid.expand(older)] == MAIN["run_ids"]


def test_a_checkpoint_of_the_older_state_layout_is_not_loaded(tmp_path):
    path = tmp_path / "chunk.npz"
    checkpoint.save(path, 50, 100, [np.zeros(3)], [])
    assert checkpoint.load(path)[1] == 100
    with np.load(path) as f:  # as an older phasescan wrote it: no state_format
        arrays = {k: f[k] for k in f.files if k != "state_format"}
    np.savez(open(path, "wb"), **arrays)
    assert checkpoint.load(path) is None
