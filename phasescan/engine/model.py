"""The one-layer (or deeper) transformer of "The Clock and the Pizza", in Flax.

Faithful to ../shared/reference/clock-pizza.md:
  * token embedding + learned positional embedding, no LayerNorm anywhere;
  * each block: h <- h + Attn(h); h <- h + MLP(h);
  * attention with 4 bias-free heads, scores q.k / sqrt(d_head), no causal mask, mixed with a
    constant by the attention rate:  A = attn_rate * softmax(scores) + (1 - attn_rate)
    (the constant adds 1 to EVERY entry: at attn_rate = 0 a position receives the SUM of the
    value vectors);
  * MLP d -> 4d -> d with biases, ReLU or exact-erf GeLU;
  * untied unembedding without bias, one logit per vocabulary entry (p, p + 1 with the "="
    token, 2p with b's own vocabulary), initialised normal / sqrt(vocab) as the authors built
    it; logits read at the last position only.

Parameter names and shapes follow the `.npz` interchange layout (docs/weights-format.md) with a
row-vector convention (`x @ W`), so converting to and from saved weights is only a stack.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def normal(scale_dim: int):
    """Standard normal divided by sqrt(scale_dim): the reference initialisation."""
    return nn.initializers.normal(stddev=1.0 / math.sqrt(scale_dim))


ACTIVATIONS = {
    "relu": jax.nn.relu,
    # PyTorch's default GeLU is the exact erf form; jax.nn.gelu defaults to the tanh approximation.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


class Block(nn.Module):
    d_model: int
    n_heads: int
    act: str
    last_only: bool = False  # the final block: only the last position's output is ever read

    @nn.compact
    def __call__(self, h: jax.Array, attn_rate: jax.Array) -> jax.Array:
        d, n_heads = self.d_model, self.n_heads
        d_head, d_mlp = d // n_heads, 4 * d
        W_Q = self.param("W_Q", normal(d), (n_heads, d, d_head))
        W_K = self.param("W_K", normal(d), (n_heads, d, d_head))
        W_V = self.param("W_V", normal(d), (n_heads, d, d_head))
        W_O = self.param("W_O", normal(d), (n_heads * d_head, d))
        W_in = self.param("W_in", normal(d_mlp), (d, d_mlp))
        b_in = self.param("b_in", nn.initializers.zeros, (d_mlp,))
        W_out = self.param("W_out", normal(d), (d_mlp, d))
        b_out = self.param("b_out", nn.initializers.zeros, (d,))

        # Skipping the queries and the MLP of positions nobody reads changes no result.
        h_query = h[..., -1:, :] if self.last_only else h
        q = jnp.einsum("...qd,hde->...hqe", h_query, W_Q)
        k = jnp.einsum("...kd,hde->...hke", h, W_K)
        v = jnp.einsum("...kd,hde->...hke", h, W_V)
        scores = jnp.einsum("...hqe,...hke->...hqk", q, k) / math.sqrt(d_head)
        pattern = attn_rate * jax.nn.softmax(scores, axis=-1) + (1.0 - attn_rate)
        z = jnp.einsum("...hqk,...hke->...qhe", pattern, v)
        h = h_query + z.reshape(*z.shape[:-2], n_heads * d_head) @ W_O
        return h + ACTIVATIONS[self.act](h @ W_in + b_in) @ W_out + b_out


class Transformer(nn.Module):
    """tokens (..., n_ctx) -> logits (..., vocab) at the last position."""

    vocab: int  # tokens in and logits out (the label is a number 0..p-1 among them)
    n_ctx: int
    d_model: int
    n_layers: int = 1
    n_heads: int = 4
    act: str = "relu"

    def setup(self):
        self.embed = self.param("embed", normal(self.d_model), (self.vocab, self.d_model))
        self.pos_embed = self.param("pos_embed", normal(self.d_model), (self.n_ctx, self.d_model))
        self.unembed = self.param("unembed", normal(self.vocab), (self.d_model, self.vocab))
        self.blocks = [
            Block(self.d_model, self.n_heads, self.act, last_only=(i == self.n_layers - 1),
                  name=f"layer_{i}")
            for i in range(self.n_layers)
        ]

    def __call__(self, tokens: jax.Array, attn_rate: jax.Array) -> jax.Array:
        return self.from_token_vectors(self.embed[tokens], attn_rate)

    def from_token_vectors(self, token_vectors: jax.Array, attn_rate: jax.Array) -> jax.Array:
        """Logits from the token embedding vectors (..., n_ctx, d), before positions are added.

        Gradient symmetricity differentiates through this entry point.
        """
        h = token_vectors + self.pos_embed
        for block in self.blocks:
            h = block(h, attn_rate)
        return h[..., -1, :] @ self.unembed
