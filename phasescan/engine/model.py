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

Two forwards compute the same function (`model.forward`, docs/benchmarks.md):
  * `Transformer` (direct): every pair's tokens through every layer, the reference;
  * `factored_logits` (the default for one layer): what depends on one token is computed once per
    (position, token) as a table, and a pair only gathers and mixes table rows.

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


def factored_tables(params, n_heads: int) -> dict:
    """The per-token tables of a one-layer Transformer (`factored_logits` says why they suffice),
    each indexed [head, position, token, ...] or [token, ...]."""
    p = params["params"]
    layer = p["layer_0"]
    d = p["embed"].shape[1]
    d_head = d // n_heads
    # (n_ctx, vocab, d): every token's residual vector at every position
    x = p["embed"][None] + p["pos_embed"][:, None]
    v = jnp.einsum("ivd,hde->hive", x, layer["W_V"])
    # What the residual stream feeds, the MLP's pre-activation and the logits: a head's value
    # through W_O into W_in (d_head -> 4d) and into the unembedding (d_head -> vocab).
    W_O = layer["W_O"].reshape(n_heads, d_head, d)
    return {
        "q": jnp.einsum("vd,hde->hve", x[-1], layer["W_Q"]) / math.sqrt(d_head),  # last position
        "k": jnp.einsum("ivd,hde->hive", x, layer["W_K"]),
        "pre_last": x[-1] @ layer["W_in"] + layer["b_in"],  # (vocab, 4d)
        "pre_head": jnp.einsum("hive,hef->hivf", v, W_O @ layer["W_in"]),  # (heads, n_ctx, vocab, 4d)
        "logit_last": (x[-1] + layer["b_out"]) @ p["unembed"],  # (vocab, vocab)
        "logit_head": jnp.einsum("hive,hef->hivf", v, W_O @ p["unembed"]),  # (heads, n_ctx, vocab, vocab)
        "out_unembed": layer["W_out"] @ p["unembed"],  # (4d, vocab)
    }


def factored_logits(params, tokens: jax.Array, attn_rate: jax.Array, n_heads: int,
                    act: str) -> jax.Array:
    """The one-layer Transformer's logits (N, vocab) of tokens (N, n_ctx), through per-token tables.

    A position's residual vector depends on its token alone, so its query, key and value are a
    table of `vocab` rows per position (not N). The last position's output is
        h = x + sum_{head, i} A[head, i] (v[head, i] @ W_O[head])
    (A: the mixed attention pattern, x: the last token's vector), so the MLP's pre-activation
    h @ W_in + b_in and the direct path h @ W_U are sums of the same weights A over tables of width
    4d and vocab; W_out and the unembedding fold into one (4d, vocab) product. Per pair there are
    left the attention scores, the weighted sums of table rows and ReLU(pre) @ (W_out W_U). In
    exact arithmetic it is the same function; float32 rounds it differently, as another chunk
    size does. Any rows (a minibatch); `factored_grid_logits` is the same for all p^2 pairs.
    """
    t = factored_tables(params, n_heads)
    positions = jnp.arange(tokens.shape[-1])
    last = tokens[:, -1]
    scores = jnp.einsum("hne,hnie->hni", t["q"][:, last], t["k"][:, positions, tokens])
    pattern = attn_rate * jax.nn.softmax(scores, axis=-1) + (1.0 - attn_rate)  # (heads, N, n_ctx)
    mix = lambda table: jnp.einsum("hni,hnif->nf", pattern, table[:, positions, tokens])
    pre = t["pre_last"][last] + mix(t["pre_head"])
    return t["logit_last"][last] + mix(t["logit_head"]) + ACTIVATIONS[act](pre) @ t["out_unembed"]


def factored_grid_logits(params, position_tokens: jax.Array, attn_rate: jax.Array, n_heads: int,
                         act: str) -> jax.Array:
    """`factored_logits` of every pair (a, b) at once, as logits (p, p, vocab).

    `position_tokens` (n_ctx, p): the token at position i of the pairs with a (i = 0), b (i = 1)
    = 0..p-1; later positions hold one token (its row 0 is read). On the grid a table row is
    broadcast, not gathered: the weighted sums are dense einsums and their gradients are sums
    over a or b, where gathered rows would need a scatter-add per pair (slow on a CPU).
    """
    t = factored_tables(params, n_heads)
    n_ctx = position_tokens.shape[0]
    rows = lambda table, i: table[:, i, position_tokens[i]]  # (heads, p, width)

    def on_grid(x, i):
        """Rows (..., p, width) indexed by position i's operand, as (..., a, b, width)."""
        return x[..., :, None, :] if i == 0 else x[..., None, :, :] if i == 1 else x[..., :1, None, :]

    def mix(pattern, table):
        """sum over heads and positions of pattern[h, a, b, i] * table row of position i."""
        total = 0.0
        for i in range(n_ctx):
            r = rows(table, i)
            spec = "hab,haf->abf" if i == 0 else "hab,hbf->abf" if i == 1 else "hab,hf->abf"
            total = total + jnp.einsum(spec, pattern[..., i], r if i < 2 else r[:, 0])
        return total

    last = n_ctx - 1
    q = on_grid(t["q"][:, position_tokens[last]], last)  # (heads, a|1, b|1, d_head)
    n_heads, p = q.shape[0], position_tokens.shape[1]
    scores = jnp.stack([jnp.broadcast_to(jnp.sum(q * on_grid(rows(t["k"], i), i), axis=-1), (n_heads, p, p))
                        for i in range(n_ctx)], -1)
    pattern = attn_rate * jax.nn.softmax(scores, axis=-1) + (1.0 - attn_rate)  # (heads, p, p, n_ctx)
    pre = on_grid(t["pre_last"][position_tokens[last]], last) + mix(pattern, t["pre_head"])
    return (on_grid(t["logit_last"][position_tokens[last]], last) + mix(pattern, t["logit_head"])
            + ACTIVATIONS[act](pre) @ t["out_unembed"])
