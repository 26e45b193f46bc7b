"""Training: pure functions of one model, vmapped over a chunk (phasescan/engine/chunk.py).

`make_program(spec)` returns the bucket's Program: `init(key, hp)`, `advance(state, key, hp,
start)` (a segment of steps, one `lax.scan`) and `measure(state, hp)`; `make_train(spec)` is the
same as one function `train(key, hp) -> (params, metrics)`.
  * `key` is the model's init key (jax.random.key(seed)),
  * `hp` is an `HParams` of per-model scalars (attention rate, lr, ...), so one compilation
    serves every model of a bucket whatever their values.
Only shape-changing fields (the `Spec`) are Python values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..core.config import DYNAMICS_EVERY, MODEL_KINDS, STATIC, VMAPPED
from ..core.tasks import n_train
from . import data, metrics, precision
from .linear import KINDS as LINEAR_KINDS
from .linear import LinearModel
from .loss import LOSSES
from .model import Transformer, factored_grid_logits, factored_logits

ADAM_EPS = 1e-8  # PyTorch's AdamW default, which the paper used


class HParams(NamedTuple):
    """Per-model scalars (vmapped): the run's data seed (its own seed, or task.split_seed when
    that is set: grid.data_seed) and the vmapped config fields, by their config names."""
    data_seed: jax.Array  # uint32: the seed of the model's train/test split
    attn_rate: jax.Array
    lr: jax.Array
    weight_decay: jax.Array
    beta1: jax.Array
    beta2: jax.Array
    warmup_steps: jax.Array
    init_scale: jax.Array = 1.0  # added later (config.Field.default): last, with its default

    @classmethod
    def from_runs(cls, runs: list[dict]) -> "HParams":
        """Stack the vmapped fields of several runs into arrays (leading axis = model)."""
        return cls(**{name: jnp.asarray([r[name] for r in runs], dtype=cls.dtype(name))
                      for name in cls._fields})

    @classmethod
    def abstract(cls, shape: tuple = ()) -> "HParams":
        """Shapes and dtypes only (for compiling ahead of time): `shape` per field."""
        return cls(**{name: jax.ShapeDtypeStruct(shape, cls.dtype(name)) for name in cls._fields})

    @staticmethod
    def dtype(name: str):
        return jnp.uint32 if name == "data_seed" else jnp.float32


# task.split_seed (a config field) is not per-model data: it decides each run's data_seed.
assert set(HParams._fields) == set(VMAPPED) - {"split_seed"} | {"data_seed"}, \
    "HParams must hold the data seed and exactly the other vmapped fields"


@dataclasses.dataclass(frozen=True)
class Spec:
    """The shape-changing fields of a bucket (config.STATIC): one compilation each."""
    p: int
    train_frac: float  # the number of train pairs is a shape
    d_model: int
    n_layers: int
    n_heads: int
    act: str
    steps: int
    batch_size: int | None
    # The model zoo and the tasks (defaults: the paper's transformer on [a, b] -> a + b).
    kind: str = "transformer"
    op: str = "add"
    input_format: str = "ab"
    precision: str = "float32"  # precision.PRECISIONS
    cross_entropy: str = "accurate"  # loss.LOSSES: the training loss (metrics: always accurate)
    log_every: int | None = None  # metrics every log_every steps (None / 0: only at the end)
    dynamics_every: int = DYNAMICS_EVERY  # the dynamics' test accuracy every K steps (DynamicsState)
    forward: str = "direct"  # model.forward: factored (one-layer transformer) | direct

    @classmethod
    def from_run(cls, run: dict) -> "Spec":
        return cls(**{name: run[name] for name in STATIC})


assert set(f.name for f in dataclasses.fields(Spec)) == set(STATIC), "Spec must hold the static fields"


class Net(NamedTuple):
    """A model family's functions with the attention rate bound in; what training and the
    metrics need, so every family (transformer, linear, ...) plugs in the same way."""
    init: Callable  # key -> params
    logits: Callable  # (params, tokens (N, n_ctx)) -> logits (N, outputs): p, or the vocabulary
    logits_from_vectors: Callable  # (params, token vectors (n_ctx, d)) -> logits (outputs,)
    token_vectors: Callable  # (params, tokens (..., n_ctx)) -> vectors (..., n_ctx, d)
    number_rows: Callable  # params -> embedding rows (p, d) of the numbers 0..p-1 (operand a)
    # params -> logits (p^2, outputs) of every pair in dataset order, where the model computes them
    # faster at once than as rows (the factored forward on the grid); None: logits(all tokens)
    grid_logits: Callable | None = None


def transformer_net(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array) -> Net:
    model = Transformer(vocab=dataset.vocab, n_ctx=dataset.n_ctx, d_model=spec.d_model,
                        n_layers=spec.n_layers, n_heads=spec.n_heads, act=spec.act)
    embed = lambda params: params["params"]["embed"]
    grid_logits = None
    if spec.forward == "factored":
        if spec.n_layers != 1:  # grid.with_forward runs deeper models direct; never a wrong logit
            raise ValueError(f"the factored forward is one-layer only (n_layers={spec.n_layers})")
        logits = lambda params, tokens: factored_logits(params, tokens, attn_rate, spec.n_heads, spec.act)
        numbers, zeros = jnp.arange(spec.p), jnp.zeros(spec.p, jnp.int32)
        # the token at each position as a function of its operand (a, b; later ones constant)
        position_tokens = jnp.concatenate([dataset.tokens_of(numbers, zeros)[:, :1].T,
                                           dataset.tokens_of(zeros, numbers)[:, 1:].T])
        grid_logits = lambda params: factored_grid_logits(
            params, position_tokens, attn_rate, spec.n_heads, spec.act).reshape(dataset.n_pairs, -1)
    else:
        logits = lambda params, tokens: model.apply(params, tokens, attn_rate)
    return Net(
        init=lambda key: model.init(key, jnp.zeros((1, dataset.n_ctx), jnp.int32), attn_rate),
        # grad_sym differentiates through the token vectors, which only the direct forward takes
        logits=logits,
        logits_from_vectors=lambda params, vectors: model.apply(
            params, vectors, attn_rate, method=Transformer.from_token_vectors),
        token_vectors=lambda params, tokens: embed(params)[tokens],
        number_rows=lambda params: embed(params)[: spec.p],
        grid_logits=grid_logits,
    )


def linear_net(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array) -> Net:
    """The attention-free models (linear.py): hidden width h = d_model; the attention rate is
    accepted (it stays a vmapped field) and ignored, as are n_layers and n_heads."""
    del attn_rate
    model = LinearModel(kind=spec.kind, p=spec.p, hidden=spec.d_model, act=spec.act)
    return Net(
        init=lambda key: model.init(key, jnp.zeros((1, 2), jnp.int32)),
        logits=lambda params, tokens: model.apply(params, tokens),
        logits_from_vectors=lambda params, vectors: model.apply(
            params, vectors, method=LinearModel.from_token_vectors),
        token_vectors=lambda params, tokens: model.apply(
            params, tokens, method=LinearModel.token_vectors),
        number_rows=lambda params: model.apply(params, method=LinearModel.number_rows),
    )


NET_BUILDERS: dict[str, Callable] = {"transformer": transformer_net} | {
    kind: linear_net for kind in LINEAR_KINDS}
assert tuple(NET_BUILDERS) == MODEL_KINDS, "every config.MODEL_KINDS needs a Net builder"


def build_net(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array) -> Net:
    """The Net of the bucket's model family (`model.kind`)."""
    return NET_BUILDERS[spec.kind](spec, dataset, attn_rate)


def warmup_schedule(hp: HParams) -> Callable:
    """lr * min(step / warmup_steps, 1): PyTorch's LambdaLR(min(step/10, 1)) of the paper,
    so the very first step has learning rate 0."""
    def schedule(step):
        ramp = jnp.minimum(step / jnp.maximum(hp.warmup_steps, 1.0), 1.0)
        return hp.lr * jnp.where(hp.warmup_steps > 0, ramp, 1.0)
    return schedule


def scaled_weights(params, scale: jax.Array):
    """`model.init_scale`: every weight (a leaf of >= 2 dimensions: embeddings, matrices, stacked
    heads) multiplied by `scale`, the biases (1-D) as initialised (zero in the transformer)."""
    return jax.tree_util.tree_map(lambda x: x * scale if x.ndim >= 2 else x, params)


def n_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """How many rows' largest logit is the label's (int32: an accuracy as an exact count; XLA
    turns a float mean into a multiplication by 1/n, which is not exactly 1 at every n)."""
    return jnp.sum(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.int32)


def compute_logits(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array, params,
                   tokens: jax.Array) -> jax.Array:
    """The logits training sees: the forward pass under the precision policy (in the compute
    dtype, params kept float32 by the caller)."""
    net = build_net(spec, dataset, precision.for_compute(attn_rate, spec.precision))
    return net.logits(precision.for_compute(params, spec.precision), tokens)


def loss_and_correct(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array, params,
                     tokens: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The training loss, mean cross-entropy (`train.cross_entropy`) over `tokens` in float32
    (backward in the compute dtype), and n_correct of the same logits."""
    logits = compute_logits(spec, dataset, attn_rate, params, tokens)
    return jnp.mean(LOSSES[spec.cross_entropy](logits, labels)), n_correct(logits, labels)


def mean_loss(spec: Spec, dataset: data.Dataset, attn_rate: jax.Array, params, tokens: jax.Array,
              labels: jax.Array) -> jax.Array:
    """The training loss alone (loss_and_correct)."""
    return loss_and_correct(spec, dataset, attn_rate, params, tokens, labels)[0]


# A model has fit its training set once its training loss is this low: every train pair is then
# classified correctly and confidently (a mean of 1e-5 bounds each pair's loss by n_train * 1e-5,
# below log 2 up to p ~ 260). Converged models sit two orders lower (the authors': 1.45e-7).
FIT_LOSS = 1e-5


class SpikeState(NamedTuple):
    """The loss-spike statistic, carried through the training scan (no host transfers):
    `fit_step`, the first step whose training loss is <= FIT_LOSS (-1: never), and `spike_loss`,
    the largest training loss at any later step, at `spike_step` (NaN / -1 until then). A model
    that trains like the paper's stays below FIT_LOSS after it fit; one that spikes does not.
    A step's loss is that of the parameters before the step's update. docs/metrics.md."""
    fit_step: jax.Array
    spike_loss: jax.Array
    spike_step: jax.Array

    @classmethod
    def start(cls) -> "SpikeState":
        return cls(jnp.int32(-1), jnp.float32(jnp.nan), jnp.int32(-1))

    def update(self, step: jax.Array, loss: jax.Array) -> "SpikeState":
        after_fit = self.fit_step >= 0
        higher = after_fit & ~(loss <= self.spike_loss)  # NaN-safe: the first comparison wins
        step = step.astype(jnp.int32)
        return SpikeState(
            fit_step=jnp.where(~after_fit & (loss <= FIT_LOSS), step, self.fit_step),
            spike_loss=jnp.where(higher, loss, self.spike_loss),
            spike_step=jnp.where(higher, step, self.spike_step))

    def columns(self) -> dict[str, jax.Array]:
        return self._asdict()


DELAY_BITS = 20  # DynamicsState's delay: delay_lo holds the low 20 bits of the exact sum
DELAY_WORD = 2 ** DELAY_BITS


def least_count(rows: int, share: float) -> int:
    """The fewest of `rows` right whose accuracy (a float64 count / rows, as Python divides) is
    >= share: the learned threshold as an exact count (rows + 1: never)."""
    for count in range(max(0, math.floor(share * rows) - 1), rows + 1):
        if count / rows >= share:
            return count
    return rows + 1


@dataclasses.dataclass(frozen=True)
class DynamicsRows:
    """What the dynamics count against (static): the rows of a step's training accuracy (the
    train pairs, or train.batch_size), the test pairs (0: none, train_frac = 1) and the learned
    threshold (classify.min_test_acc) as the least count of each."""
    train: int
    test: int
    learned: float

    def __post_init__(self):
        # the delay's per-step numerator (DynamicsState) is an int32 product of the two
        if self.train * self.test >= 2**31 - DELAY_WORD:
            raise ValueError(f"{self.train} x {self.test} rows: too many for the dynamics' int32 "
                             "delay (p >= ~290)")

    @property
    def train_learned(self) -> int:
        return least_count(self.train, self.learned)

    @property
    def test_learned(self) -> int:
        return least_count(self.test, self.learned) if self.test else 1


class DynamicsState(NamedTuple):
    """Generalisation dynamics, carried through the training scan like SpikeState (no host
    transfers): what the Clock and Pizza authors logged every step. Step t's accuracies are those
    of the parameters before its update (their order): the training accuracy of the logits the
    loss computes (a minibatch's with train.batch_size), the test accuracy of one forward pass
    over the test pairs (every train.dynamics_every steps; -1 = not measured at t: the best so
    far holds). Both are exact counts of right rows (DynamicsRows: out of how many, and the
    learned threshold, classify.min_test_acc, as a count). docs/metrics.md.

      memorize_step / generalize_step          first step with train / test accuracy >= learned
      perfect_train_step / perfect_test_step   first step with train / test accuracy == 1
      delay                                    sum over steps of best train accuracy so far minus
                                               best test accuracy so far (generalization_delay1)
    -1 where a step never came. The delay is summed exactly, as the integer numerator of
    best_train / n_train - best_test / n_test over the common denominator n_train n_test, in two
    int32 words (delay_hi * DELAY_WORD + delay_lo): one rounding at the end, whatever the number
    of steps (a float32 sum would add each step's rounding of count / n, the same every step)."""
    memorize_step: jax.Array
    generalize_step: jax.Array
    perfect_train_step: jax.Array
    perfect_test_step: jax.Array
    best_train: jax.Array  # int32 counts: the best so far
    best_test: jax.Array
    delay_hi: jax.Array
    delay_lo: jax.Array  # 0 <= delay_lo < DELAY_WORD

    @classmethod
    def start(cls) -> "DynamicsState":
        never, zero = jnp.int32(-1), jnp.int32(0)
        return cls(never, never, never, never, zero, zero, zero, zero)

    def update(self, step: jax.Array, train_correct: jax.Array, test_correct: jax.Array,
               rows: DynamicsRows) -> "DynamicsState":
        step = step.astype(jnp.int32)
        first = lambda seen, reached: jnp.where((seen < 0) & reached, step, seen)
        best_train = jnp.maximum(self.best_train, train_correct)
        best_test = jnp.maximum(self.best_test, test_correct)  # -1 (not measured): no change
        # this step's gap times n_train n_test, added to the two words exactly
        total = self.delay_lo + (best_train * rows.test - best_test * rows.train)
        carry = jnp.right_shift(total, DELAY_BITS)  # floor division, negative totals too
        return DynamicsState(
            memorize_step=first(self.memorize_step, train_correct >= rows.train_learned),
            generalize_step=first(self.generalize_step, test_correct >= rows.test_learned),
            perfect_train_step=first(self.perfect_train_step, train_correct == rows.train),
            perfect_test_step=first(self.perfect_test_step, (test_correct == rows.test) & (rows.test > 0)),
            best_train=best_train, best_test=best_test,
            delay_hi=self.delay_hi + carry, delay_lo=total - carry * DELAY_WORD)

    def columns(self, rows: DynamicsRows) -> dict[str, jax.Array]:
        """The runs.parquet columns; without test pairs (train_frac = 1) the delay is NaN (the
        test steps are -1: no test accuracy was ever measured)."""
        numerator = self.delay_hi.astype(jnp.float32) * DELAY_WORD + self.delay_lo.astype(jnp.float32)
        delay = numerator / jnp.float32(rows.train * rows.test) if rows.test else jnp.float32(jnp.nan)
        return {"memorize_step": self.memorize_step, "generalize_step": self.generalize_step,
                "perfect_train_step": self.perfect_train_step,
                "perfect_test_step": self.perfect_test_step, "generalization_delay": delay}


class TrainState(NamedTuple):
    """What one model's training carries from segment to segment."""
    params: Any
    opt_state: Any
    spikes: SpikeState
    dynamics: DynamicsState


class Program(NamedTuple):
    """One bucket's training as three pure functions of one model, vmapped over a chunk:

      init(key, hp) -> TrainState
      advance(state, key, hp, start) -> TrainState   `segment` steps start, start + 1, ... in one
                                                      lax.scan; steps from spec.steps on are
                                                      skipped, so any segment length fits
      measure(state, hp) -> metrics                  every metric of the model as it stands

    The host calls advance segment after segment (progress, interruption, checkpoints, the
    train.log_every history); the steps themselves never leave the device."""
    init: Callable
    advance: Callable
    measure: Callable
    segment: int


# The config's `metrics` options (conf/config.yaml), for callers that pass none, and
# `learned_acc`, the dynamics' learned threshold: the sweep passes classify.min_test_acc.
METRIC_DEFAULTS = {"grad_sym_triples": 300, "triples_seed": 0, "key_freq_min_share": 0.1,
                   "n_circles": 3, "learned_acc": 0.9}


def make_program(spec: Spec, segment: int | None = None, metric_opts: dict | None = None) -> Program:
    """The bucket's Program; `segment` steps per advance (default: all of them at once);
    `metric_opts` the config's `metrics` section (and `learned_acc`: METRIC_DEFAULTS)."""
    segment = min(segment or spec.steps, spec.steps)
    opts = METRIC_DEFAULTS | (metric_opts or {})
    dataset = data.Dataset(spec.p, spec.op, spec.input_format)
    triples = jnp.asarray(metrics.grad_sym_triples(spec.p, opts["grad_sym_triples"], opts["triples_seed"]))

    def setup(hp: HParams):
        """What every function derives from a model's hyperparameters (cheap: recomputed)."""
        net = build_net(spec, dataset, hp.attn_rate)
        train_idx, test_idx = data.split(jax.random.key(hp.data_seed), dataset.n_pairs, spec.train_frac)
        # Decoupled weight decay scaled by the learning rate, as PyTorch's AdamW and optax do.
        optimizer = optax.adamw(warmup_schedule(hp), b1=hp.beta1, b2=hp.beta2, eps=ADAM_EPS,
                                weight_decay=hp.weight_decay)
        return net, (train_idx, test_idx), optimizer

    n_train_pairs = n_train(dataset.n_pairs, spec.train_frac)
    has_test = dataset.n_pairs > n_train_pairs
    every = spec.dynamics_every or 1
    rows = DynamicsRows(train=spec.batch_size or n_train_pairs, test=dataset.n_pairs - n_train_pairs,
                        learned=opts["learned_acc"])

    def init(key: jax.Array, hp: HParams) -> TrainState:
        net, _, optimizer = setup(hp)
        params = scaled_weights(net.init(key), hp.init_scale)
        return TrainState(params, optimizer.init(params), SpikeState.start(), DynamicsState.start())

    def advance(state: TrainState, key: jax.Array, hp: HParams, start: jax.Array) -> TrainState:
        net, (train_idx, test_idx), optimizer = setup(hp)
        # Full batch through the grid (the factored forward): one forward over every pair gives
        # the train loss (test pairs weighted 0) and the test accuracy of the same parameters.
        on_grid = spec.batch_size is None and net.grid_logits is not None
        is_train = data.indicator(train_idx, dataset.n_pairs) > 0
        train_tokens, train_labels = dataset.tokens[train_idx], dataset.labels[train_idx]
        test_tokens, test_labels = dataset.tokens[test_idx], dataset.labels[test_idx]

        def test_correct(params, step_index):
            """One forward pass over the test pairs, every `every` steps (-1 between: the step
            index is the chunk's, not per model, so the branch is a real one)."""
            if not has_test:
                return jnp.int32(-1)
            forward = lambda params: n_correct(
                compute_logits(spec, dataset, hp.attn_rate, params, test_tokens), test_labels)
            if every == 1:
                return forward(params)
            return jax.lax.cond(step_index % every == 0, forward, lambda _: jnp.int32(-1), params)

        def loss_fn(params, step_key):
            # Full batch: every train pair (and only those: the test pairs cost nothing), every
            # step. A minibatch: batch_size train pairs drawn without replacement.
            tokens, labels = train_tokens, train_labels
            if spec.batch_size is not None:
                pick = jax.random.choice(step_key, len(train_labels), (spec.batch_size,),
                                         replace=False)
                tokens, labels = tokens[pick], labels[pick]
            return loss_and_correct(spec, dataset, hp.attn_rate, params, tokens, labels)

        def grid_loss_fn(params, step_index):
            net = build_net(spec, dataset, precision.for_compute(hp.attn_rate, spec.precision))
            logits = net.grid_logits(precision.for_compute(params, spec.precision))
            ce = LOSSES[spec.cross_entropy](logits, dataset.labels)
            right = jnp.argmax(logits, axis=-1) == dataset.labels
            count = lambda rows: jnp.sum(right & rows, dtype=jnp.int32)
            test_right = jnp.where(step_index % every == 0, count(~is_train), -1) if has_test else jnp.int32(-1)
            loss = jnp.sum(jnp.where(is_train, ce, 0.0)) / n_train_pairs
            return loss, (count(is_train), test_right)

        def step(state: TrainState, step_index) -> TrainState:
            if on_grid:
                (loss, (train_right, test_right)), grads = jax.value_and_grad(grid_loss_fn, has_aux=True)(
                    state.params, step_index)
            else:
                (loss, train_right), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    state.params, jax.random.fold_in(key, step_index))
                # before the update, with the parameters the loss saw (the authors' order)
                test_right = test_correct(state.params, step_index)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return TrainState(optax.apply_updates(state.params, updates), opt_state,
                              state.spikes.update(step_index, loss),
                              state.dynamics.update(step_index, train_right, test_right, rows))

        def guarded(state, step_index):
            # `start` is the same for every model of a chunk (not vmapped): a real branch
            return jax.lax.cond(step_index < spec.steps, step, lambda s, _: s, state, step_index), None

        body = guarded if spec.steps % segment else lambda state, i: (step(state, i), None)
        state, _ = jax.lax.scan(body, state, start + jnp.arange(segment))
        return state

    def measure(state: TrainState, hp: HParams) -> dict[str, jax.Array]:
        net, (train_idx, _), _ = setup(hp)
        mask = data.indicator(train_idx, dataset.n_pairs)  # the metrics' train/test split
        return metrics.evaluate(net, state.params, dataset, mask, triples,
                                opts["key_freq_min_share"], opts["n_circles"]) \
            | state.spikes.columns() | state.dynamics.columns(rows)

    under = lambda fn: precision.traced_under(spec.precision, fn)
    return Program(under(init), under(advance), under(measure), segment)


def make_train(spec: Spec, metric_opts: dict | None = None) -> Callable:
    """`train(key, hp) -> (params, metrics)`: one model's whole training as one pure function
    (the Program in a single segment), for the one-model-at-a-time baseline and the tests."""
    program = make_program(spec, spec.steps, metric_opts)

    def train(key: jax.Array, hp: HParams):
        state = program.advance(program.init(key, hp), key, hp, jnp.int32(0))
        return state.params, program.measure(state, hp)
    return train
