"""The authors' attention-free models A, B, C, D and X of "The Clock and the Pizza", in Flax.

../shared/reference/clock-pizza.md, section "attention-free linear models". Each reads the two
tokens a, b and ends with logits = act(...) @ U, U an (h, p) unembedding (row-vector convention
as in model.py). The hidden width h is `model.d_model`.
  A: act(W1 (E[a] + E[b]) + b1)
  B: act(W2 act(W1 (E[a] + E[b]) + b1) + b2)
  C: act(W2 act(W1 E[a] + b1 + W1 E[b] + b1) + b2)
  D: act(W1 [E[a]; E[b]] + b1), E of width h/2, the two embeddings concatenated
  X: act(W1 (E1[a] + E2[b]) + b1), separate embedding tables for a and b
`act` is `model.act` (the authors': relu). Initialisation as the reference: embedding tables
normal / sqrt(h/2), U normal / sqrt(h), hidden layers PyTorch's nn.Linear default (weight and bias
uniform in +-1/sqrt(fan_in)).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .model import ACTIVATIONS, normal

KINDS = ("linear_a", "linear_b", "linear_c", "linear_d", "linear_x")


def torch_linear_init(fan_in: int):
    """PyTorch's nn.Linear default for weight and bias: uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)]."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LinearModel(nn.Module):
    """tokens (..., 2) = [a, b] -> logits (..., p)."""

    kind: str  # one of KINDS
    p: int
    hidden: int  # h
    act: str = "relu"

    def setup(self):
        h, p = self.hidden, self.p
        width = h // 2 if self.kind == "linear_d" else h  # embedding width
        self.embed = self.param("embed", normal(h // 2), (p, width))
        if self.kind == "linear_x":
            self.embed_b = self.param("embed_b", normal(h // 2), (p, width))
        self.W1 = self.param("W1", torch_linear_init(h), (h, h))
        self.b1 = self.param("b1", torch_linear_init(h), (h,))
        if self.kind in ("linear_b", "linear_c"):
            self.W2 = self.param("W2", torch_linear_init(h), (h, h))
            self.b2 = self.param("b2", torch_linear_init(h), (h,))
        self.unembed = self.param("unembed", normal(h), (h, p))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.from_token_vectors(self.token_vectors(tokens))

    def token_vectors(self, tokens: jax.Array) -> jax.Array:
        """The embedding vectors (..., 2, width) that a and b use: E[a], E[b] (X: E1[a], E2[b])."""
        table_b = self.embed_b if self.kind == "linear_x" else self.embed
        return jnp.stack([self.embed[tokens[..., 0]], table_b[tokens[..., 1]]], axis=-2)

    def from_token_vectors(self, vectors: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.act]
        ea, eb = vectors[..., 0, :], vectors[..., 1, :]
        if self.kind in ("linear_a", "linear_x"):
            hidden = act((ea + eb) @ self.W1 + self.b1)
        elif self.kind == "linear_b":
            hidden = act(act((ea + eb) @ self.W1 + self.b1) @ self.W2 + self.b2)
        elif self.kind == "linear_c":
            hidden = act(act(ea @ self.W1 + self.b1 + eb @ self.W1 + self.b1) @ self.W2 + self.b2)
        else:  # linear_d
            hidden = act(jnp.concatenate([ea, eb], axis=-1) @ self.W1 + self.b1)
        return hidden @ self.unembed

    def number_rows(self) -> jax.Array:
        """The embedding rows of operand a's numbers 0..p-1."""
        return self.embed
