"""The authors' way in PyTorch: one eager model after another, for timing phasescan against it.

A library module (bench.throughput's torch row, bench.cpu_vs_torch, tests/test_torch_reference.py);
its command line, the PyTorch side alone as a process, is `python -m bench.cpu_vs_torch torch`:

    python -m bench.cpu_vs_torch torch --p 23 --d-model 32 --steps 1000 --attn-rates 8 --seeds 2
    python -m bench.cpu_vs_torch torch ... --json out.json --save-weights DIR   # rows; .npz weights

Written from ../shared/reference/clock-pizza.md (not from the authors' code): the one-layer
transformer of "The Clock and the Pizza" (token + learned positional embedding, 4 bias-free
heads, A = attn_rate * softmax(q.k / sqrt(d_head)) + (1 - attn_rate), MLP d -> 4d -> d with
biases and ReLU, no LayerNorm, untied unembedding read at the last position), trained as the
authors trained it:

  * one model at a time, eager PyTorch, float32 parameters and matmuls;
  * full batch: every step is one forward/backward pass over all the model's train pairs (an
    80% / 20% split of the p^2 pairs drawn from the model's seed);
  * the cross-entropy in double precision: logits cast to float64 before the log-softmax, in
    training and in evaluation;
  * AdamW(lr 1e-3, weight decay 2.0, betas (0.9, 0.98), eps 1e-8) with LambdaLR(min(step/10, 1));
  * after every step a test-set evaluation (loss and accuracy on the test pairs, no gradient),
    both losses read back with .item(), as the authors logged them;
  * at the end the metrics needed to compare with phasescan: losses and accuracies, gradient
    symmetricity (the same 300 triples as phasescan's default), distance irrelevance (correct
    logit, and the largest wrong logit), circularity, the parameter norm, and the label of
    phasescan's rule without its circle steps (phasescan.core.classify; for the full rule save the
    weights and run `python -m phasescan.evaluate` on them).

By default every layer computes both positions, as an ordinary PyTorch transformer (and the
authors' code) does, and the logits are read at the last one; `--last-only` computes the last
layer at the last position only, as phasescan does (the same logits; fewer FLOPs).

Initialisation and split come from torch's own generators seeded with the run's seed, so the
models are the same hyperparameters as phasescan's, not the same weights (JAX and PyTorch random
streams differ): compare them as populations (losses, classes per attention rate).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRAIN_FRAC = 0.8
N_PCS = 4


def n_train(n_pairs: int, train_frac: float = TRAIN_FRAC) -> int:
    """floor(train_frac * n_pairs), as phasescan (2784 of 3481 at p = 59)."""
    return math.floor(train_frac * n_pairs + 1e-4)


def normal(generator: torch.Generator, shape: tuple, scale_dim: int) -> nn.Parameter:
    """Standard normal / sqrt(scale_dim): the reference initialisation."""
    return nn.Parameter(torch.randn(*shape, generator=generator) / math.sqrt(scale_dim))


class Transformer(nn.Module):
    """tokens (N, 2) -> logits (N, p) at the last position. Row-vector layout (x @ W), the
    parameter names and shapes of phasescan's .npz interchange format (docs/weights-format.md)."""

    def __init__(self, p: int, d_model: int, attn_rate: float, generator: torch.Generator,
                 n_heads: int = 4, n_ctx: int = 2, last_only: bool = False):
        super().__init__()
        d, d_head, d_mlp = d_model, d_model // n_heads, 4 * d_model
        self.p, self.n_heads, self.d_head = p, n_heads, d_head
        self.attn_rate, self.last_only = float(attn_rate), last_only
        self.embed = normal(generator, (p, d), d)
        self.pos_embed = normal(generator, (n_ctx, d), d)
        self.W_Q = normal(generator, (n_heads, d, d_head), d)
        self.W_K = normal(generator, (n_heads, d, d_head), d)
        self.W_V = normal(generator, (n_heads, d, d_head), d)
        self.W_O = normal(generator, (n_heads * d_head, d), d)
        self.W_in = normal(generator, (d, d_mlp), d_mlp)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = normal(generator, (d_mlp, d), d)
        self.b_out = nn.Parameter(torch.zeros(d))
        self.unembed = normal(generator, (d, p), p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.from_token_vectors(self.embed[tokens])

    def from_token_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits from the token embedding vectors (N, n_ctx, d), before positions are added."""
        h = vectors + self.pos_embed
        h_query = h[:, -1:] if self.last_only else h
        q = torch.einsum("nqd,hde->nhqe", h_query, self.W_Q)
        k = torch.einsum("nkd,hde->nhke", h, self.W_K)
        v = torch.einsum("nkd,hde->nhke", h, self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        pattern = self.attn_rate * torch.softmax(scores, dim=-1) + (1.0 - self.attn_rate)
        z = (pattern @ v).transpose(1, 2).reshape(*h_query.shape[:2], -1)  # heads in order
        h = h_query + z @ self.W_O
        h = h + torch.relu(h @ self.W_in + self.b_in) @ self.W_out + self.b_out
        return h[:, -1] @ self.unembed


def double_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The authors' loss: the logits cast to float64, then log-softmax and mean NLL."""
    return F.cross_entropy(logits.to(torch.float64), labels)


def dataset(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All p^2 pairs (a, b) in row-major order and their labels (a + b) mod p."""
    a, b = torch.div(torch.arange(p * p), p, rounding_mode="floor"), torch.arange(p * p) % p
    return torch.stack([a, b], dim=1), (a + b) % p


def untrained(p: int, d_model: int, attn_rate: float, seed: int, last_only: bool = False,
              train_frac: float = TRAIN_FRAC):
    """A run's untrained model and (train, test) pair indices: its seed's generator draws the
    weights, then the split (train_model's, and bench.torch_ensemble's, starting point)."""
    generator = torch.Generator().manual_seed(seed)
    model = Transformer(p, d_model, attn_rate, generator, last_only=last_only)
    order = torch.randperm(p * p, generator=generator)
    n = n_train(p * p, train_frac)
    return model, (order[:n].sort().values, order[n:].sort().values)


def adamw(params, lr: float, weight_decay: float, betas, warmup_steps: int):
    """The authors' optimiser: AdamW and its linear warm-up (LambdaLR, min(step / warmup, 1))."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # the first step has learning rate 0
        optimizer, lambda step: min(step / warmup_steps, 1.0) if warmup_steps else 1.0)
    return optimizer, schedule


def train_model(p: int, d_model: int, attn_rate: float, seed: int, steps: int,
                last_only: bool = False, eval_every: int = 1, lr: float = 1e-3,
                weight_decay: float = 2.0, betas=(0.9, 0.98), warmup_steps: int = 10,
                train_frac: float = TRAIN_FRAC, device: str = "cpu"):
    """One model the authors' way. Returns (model, (train, test) pair indices, the per-step
    log of (train loss, test loss, test accuracy))."""
    model, (train_idx, test_idx) = untrained(p, d_model, attn_rate, seed, last_only, train_frac)
    model = model.to(device)
    tokens, labels = dataset(p)
    x_train, y_train, x_test, y_test = (x.to(device) for x in (
        tokens[train_idx], labels[train_idx], tokens[test_idx], labels[test_idx]))
    optimizer, schedule = adamw(model.parameters(), lr, weight_decay, betas, warmup_steps)
    log = []
    for step in range(steps):
        loss = double_cross_entropy(model(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if eval_every and (step + 1) % eval_every == 0:
            with torch.no_grad():
                test_logits = model(x_test)
                test_loss = double_cross_entropy(test_logits, y_test)
                test_acc = (test_logits.argmax(-1) == y_test).float().mean()
            log.append((loss.item(), test_loss.item(), test_acc.item()))
    return model, (train_idx, test_idx), log


def grad_sym_triples(p: int, n_triples: int = 300, seed: int = 0) -> np.ndarray:
    """phasescan's default triples (metrics.grad_sym_triples): numpy default_rng(seed)."""
    return np.random.default_rng(seed).integers(0, p, size=(n_triples, 3))


def gradient_symmetricity(model: Transformer, triples: np.ndarray) -> float:
    """Mean cosine of d logit_c / d E[a] and d logit_c / d E[b] over the triples."""
    t = torch.as_tensor(triples)
    vectors = model.embed.detach()[t[:, :2]].clone().requires_grad_(True)  # (n, 2, d)
    logits = model.from_token_vectors(vectors)
    (grads,) = torch.autograd.grad(logits.gather(1, t[:, 2:]).sum(), vectors)  # rows independent
    ga, gb = grads[:, 0].double(), grads[:, 1].double()
    return float(torch.mean((ga * gb).sum(-1) / (ga.norm(dim=-1) * gb.norm(dim=-1) + 1e-30)))


def distance_irrelevance(values: np.ndarray, p: int) -> float:
    """mean over t = (a-b) mod p of std over s = (a+b) mod p of values[a, b], / std of all."""
    a, b = np.divmod(np.arange(p * p), p)
    table = np.empty((p, p))
    table[(a - b) % p, (a + b) % p] = values  # p odd: (a+b, a-b) is a bijection of the pairs
    return float(np.mean(table.std(axis=1)) / values.std())


def circularity(rows: np.ndarray) -> float:
    """Mean over the first 4 PCs u of min(1, max_f (2/p)|sum_t u[t f mod p] e^(2 pi i t/p)|^2/|u|^2)."""
    p = rows.shape[0]
    centered = rows - rows.mean(axis=0)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    scores = (u[:, :N_PCS] * s[:N_PCS]).T
    t, f = np.arange(p), np.arange(1, p)
    power = np.abs(scores[:, (t[None, :] * f[:, None]) % p] @ np.exp(2j * np.pi * t / p)) ** 2
    energy = np.sum(scores ** 2, axis=1)
    share = np.minimum(2.0 / p * power.max(axis=1) / np.maximum(energy, 1e-30), 1.0)
    present = energy > 1e-6 * energy.sum()
    return float(share[present].mean())


def final_metrics(model: Transformer, split, triples: np.ndarray) -> dict:
    model = model.cpu()  # the metrics on the host (a no-op on a CPU)
    p = model.p
    tokens, labels = dataset(p)
    with torch.no_grad():
        logits = model(tokens)
        loss = F.cross_entropy(logits.double(), labels, reduction="none")
        correct = (logits.argmax(-1) == labels).double()
    train_idx, test_idx = split
    numbers = logits.double().numpy()
    wrong = numbers.copy()
    wrong[np.arange(p * p), labels.numpy()] = -np.inf
    return {
        "train_loss": float(loss[train_idx].mean()), "test_loss": float(loss[test_idx].mean()),
        "train_acc": float(correct[train_idx].mean()), "test_acc": float(correct[test_idx].mean()),
        "acc": float(correct.mean()),
        "grad_sym": gradient_symmetricity(model, triples),
        "dist_irr": distance_irrelevance(numbers[np.arange(p * p), labels.numpy()], p),
        "dist_irr_top_wrong": distance_irrelevance(wrong.max(axis=1), p),
        "circularity": circularity(model.embed.detach().double().numpy()),
        "param_norm": float(torch.sqrt(sum((x.detach().double() ** 2).sum() for x in model.parameters()))),
        "diverged": not all(torch.isfinite(x).all() for x in model.parameters()),
    }


def label(rows: list[dict]) -> list[str]:
    """phasescan's rule (phasescan.core.classify, default thresholds) without its circle steps."""
    import yaml

    from phasescan.core import classify
    from phasescan.core.config import CONF_DIR
    thresholds = yaml.safe_load((CONF_DIR / "classify" / "default.yaml").read_text())
    columns = {k: np.array([r[k] for r in rows]) for k in ("grad_sym", "dist_irr", "test_acc",
                                                          "circularity", "diverged")}
    return list(classify.classify(columns, thresholds))


def to_interchange(model: Transformer, seed: int) -> dict:
    """The model in phasescan's .npz layout (one layer: a leading axis of 1); copies, so later
    training does not change them."""
    arrays = {name: x.detach().numpy().copy() for name, x in model.named_parameters()}
    for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "b_in", "W_out", "b_out"):
        arrays[name] = arrays[name][None]
    return arrays | {"attn_rate": np.float32(model.attn_rate), "p": np.int64(model.p),
                     "act": np.str_("relu"), "seed": np.int64(seed)}


def runs_of(attn_rates: int, seeds: int, seed_start: int = 0) -> list[tuple[float, int]]:
    """phasescan's grid order: attn_rate linspace(0, 1, attn_rates), seeds innermost."""
    return [(float(rate), seed_start + s) for rate in np.linspace(0, 1, attn_rates)
            for s in range(seeds)]


def train_population(p: int, d_model: int, steps: int, attn_rates: int, seeds: int,
                     last_only: bool = False, eval_every: int = 1, device: str = "cpu",
                     save_weights: Path | None = None) -> list[dict]:
    """The models of runs_of(attn_rates, seeds), one after another: a row of final metrics each
    (with its training seconds and the label of phasescan's rule without circle steps);
    save_weights: <DIR>/<i>.npz per model in phasescan's interchange layout."""
    triples = grad_sym_triples(p)
    rows = []
    for i, (rate, seed) in enumerate(runs_of(attn_rates, seeds)):
        t1 = time.perf_counter()
        model, split, _ = train_model(p, d_model, rate, seed, steps, last_only, eval_every, device=device)
        rows.append({"attn_rate": rate, "seed": seed, **final_metrics(model, split, triples),
                     "seconds": time.perf_counter() - t1})
        keep_weights(save_weights, i, model, seed)
    return labelled(rows)


def keep_weights(save_weights: Path | None, i: int, model: Transformer, seed: int) -> None:
    """<save_weights>/<i>.npz in phasescan's interchange layout (nothing when None)."""
    if save_weights:
        save_weights.mkdir(parents=True, exist_ok=True)
        np.savez(save_weights / f"{i:03d}.npz", **to_interchange(model, seed))


def labelled(rows: list[dict]) -> list[dict]:
    """The rows, each with the label of phasescan's rule without its circle steps."""
    for row, name in zip(rows, label(rows)):
        row["algorithm"] = name
    return rows
