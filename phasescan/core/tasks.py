"""The task registry: which table of (a, b) mod p a model learns, and how its input is written.

Plain numpy and no JAX, so the config boundary (config.py) can validate against it cheaply.

Operations (`task.op`): c = f(a, b) mod p for every pair. To add one, add an `Op` to OPS.
  add     a + b        the paper's task
  sub     a - b        = a + (-b): every addition metric applies after relabelling b -> -b
  mul     a * b        needs a prime p (the nonzero residues then form a group)
  sq_sum  a^2 + b^2
`Op.b_sign` says whether the label is a + b_sign * b; only then do distance irrelevance and the
Clock / Pizza logit templates have a meaning (metrics.addition_metrics); otherwise they are NaN.

Input formats (`task.input_format`), positions of a and b are always 0 and 1:
  ab      [a, b]          vocabulary p,  context 2 (the paper's default)
  ab_eq   [a, b, "="]     vocabulary p + 1 ("=" is token p), context 3
  ab_sep  [a, p + b]      vocabulary 2p, context 2 (b has its own embedding rows)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Op:
    table: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a, b) -> f(a, b), before mod p
    b_sign: int | None  # the label is (a + b_sign * b) mod p; None: not additive
    needs_prime: bool = False


OPS: dict[str, Op] = {
    "add": Op(lambda a, b: a + b, b_sign=1),
    "sub": Op(lambda a, b: a - b, b_sign=-1),
    "mul": Op(lambda a, b: a * b, b_sign=None, needs_prime=True),
    "sq_sum": Op(lambda a, b: a * a + b * b, b_sign=None),
}


@dataclasses.dataclass(frozen=True)
class InputFormat:
    separate_b: bool  # b is written as token p + b: its own embedding rows
    eq_token: bool  # a third token "=", the last token id of the vocabulary

    def vocab(self, p: int) -> int:
        return p * (2 if self.separate_b else 1) + int(self.eq_token)

    @property
    def n_ctx(self) -> int:
        return 2 + int(self.eq_token)


INPUT_FORMATS: dict[str, InputFormat] = {
    "ab": InputFormat(separate_b=False, eq_token=False),
    "ab_eq": InputFormat(separate_b=False, eq_token=True),
    "ab_sep": InputFormat(separate_b=True, eq_token=False),
}

OPERAND_POSITIONS = (0, 1)  # positions of a and b in every format


def labels(p: int, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c = f(a, b) mod p, computed in int64 so a * a + b * b cannot overflow."""
    return (OPS[op].table(a.astype(np.int64), b.astype(np.int64)) % p).astype(np.int32)


def n_train(n_pairs: int, train_frac: float) -> int:
    """floor(train_frac * n_pairs): the reference split sizes (2784 / 697 at p = 59, 0.8).
    +1e-4: 0.5 * 4 must not round down to 1.999."""
    return math.floor(train_frac * n_pairs + 1e-4)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n ** 0.5) + 1))
