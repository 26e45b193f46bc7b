"""The strong PyTorch peer: the models of bench/torch_reference.py trained as ONE vmapped ensemble.

A library module (bench.cpu_vs_torch, tests/test_torch_reference.py); its command line, as one
process, is `python -m bench.cpu_vs_torch torch-ensemble [the torch sub-command's arguments]
[--compile]`.

PyTorch's model-ensembling recipe (torch.func): the N eager `torch_reference.Transformer` models
are built exactly as `torch_reference.train_model` builds them (the same generator, seeded with the
run's seed, draws the weights and then the split), so the ensemble starts from the same weights and
the same 80/20 splits as the eager reference; `torch.func.stack_module_state` stacks their
parameters along a leading model axis and `torch.func.vmap(torch.func.functional_call)` runs one
forward for all of them:

  * the attention rate, a per-model scalar, is a vmapped input (a float32 tensor of N rates)
    passed to functional_call as the module's `attn_rate` buffer (the base module, a copy of the
    first model on the meta device, has its Python float replaced by a buffer);
  * each model's own split: every model has n_train(p^2) train pairs, so the (N, n, 2) train and
    (N, p^2 - n, 2) test token tensors stack and are vmapped with the parameters;
  * the loss is torch_reference.double_cross_entropy per model (logits cast to float64 before
    the log-softmax), the N losses summed for one backward: each model's gradient is its own;
  * one AdamW(1e-3, wd 2.0, betas 0.9/0.98, eps 1e-8) over the stacked tensors with the same
    LambdaLR warm-up min(step/10, 1): AdamW and its weight decay are elementwise, so this is N
    per-model AdamWs;
  * after every step (eval_every) one vmapped forward on each model's test pairs, no gradient,
    and ONE read-back for all models: the (3, N) float64 tensor of train loss, test loss and
    test accuracy, `.tolist()` (the eager way reads the same three numbers with three .item()s
    per model);
  * at the end the parameters are copied back into the eager modules and measured with
    torch_reference.final_metrics, labelled with torch_reference.label.

compile=True wraps the vmapped loss (forward + float64 cross-entropy, and through AOTAutograd its
backward) and the vmapped evaluation in torch.compile (inductor); the AdamW step stays eager.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

from bench import torch_reference as ref


class Ensemble:
    """The models of `runs` ((attn_rate, seed) pairs) as one vmapped ensemble."""

    def __init__(self, p: int, d_model: int, runs: list[tuple[float, int]], last_only: bool = False,
                 train_frac: float = ref.TRAIN_FRAC, device: str = "cpu"):
        built = [ref.untrained(p, d_model, rate, seed, last_only, train_frac) for rate, seed in runs]
        self.runs = list(runs)
        self.eager = [m for m, _ in built]  # CPU modules: the initial weights, then (models()) the trained
        self.splits = [split for _, split in built]
        params, _ = stack_module_state(self.eager)  # copies: leaves with requires_grad
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
        self.rates = torch.tensor([rate for rate, _ in runs], dtype=torch.float32, device=device)
        base = copy.deepcopy(self.eager[0]).to("meta")
        del base.attn_rate  # the Python float becomes a buffer that functional_call substitutes
        base.register_buffer("attn_rate", torch.zeros((), device="meta"))
        self.base = base
        tokens, labels = ref.dataset(p)
        stack = lambda x, which: torch.stack([x[split[which]] for split in self.splits]).to(device)
        self.x_train, self.y_train = stack(tokens, 0), stack(labels, 0)
        self.x_test, self.y_test = stack(tokens, 1), stack(labels, 1)

    def __len__(self) -> int:
        return len(self.runs)

    def _logits(self, params: dict, rate: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, {"attn_rate": rate}), (tokens,))

    def _loss(self, params, rate, tokens, labels):
        return ref.double_cross_entropy(self._logits(params, rate, tokens), labels)

    def _evaluation(self, params, rate, tokens, labels):
        logits = self._logits(params, rate, tokens)
        return ref.double_cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()

    def train_losses(self, params, rates, x, y) -> torch.Tensor:
        """(N,) float64: each model's mean loss on its own pairs x (N, n, 2), labels y (N, n)."""
        return vmap(self._loss)(params, rates, x, y)

    def test_evaluation(self, params, rates, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """((N,) float64 test loss, (N,) float32 test accuracy), as the eager evaluation."""
        return vmap(self._evaluation)(params, rates, x, y)

    def compiled(self):
        """train_losses and test_evaluation under torch.compile (made once per ensemble)."""
        if not hasattr(self, "_compiled"):
            self._compiled = torch.compile(self.train_losses), torch.compile(self.test_evaluation)
        return self._compiled

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n, p): every model's logits; tokens (n, 2) shared by all or (N, n, 2) per model."""
        tokens = tokens.to(self.rates.device)
        in_dims = (0, 0, 0 if tokens.dim() == 3 else None)
        return vmap(self._logits, in_dims=in_dims)(self.params, self.rates, tokens)

    def train(self, steps: int, eval_every: int = 1, lr: float = 1e-3, weight_decay: float = 2.0,
              betas=(0.9, 0.98), warmup_steps: int = 10, compile: bool = False) -> list[list[tuple]]:
        """Train all models `steps` full-batch steps from their current weights, with a fresh AdamW
        and warm-up (as one torch_reference.train_model call); per model its log ((train loss,
        test loss, test accuracy) every eval_every steps)."""
        optimizer, schedule = ref.adamw(self.params.values(), lr, weight_decay, betas, warmup_steps)
        losses_of, evaluation_of = self.compiled() if compile else (self.train_losses, self.test_evaluation)
        logs = [[] for _ in self.runs]
        for step in range(steps):
            losses = losses_of(self.params, self.rates, self.x_train, self.y_train)
            optimizer.zero_grad()
            losses.sum().backward()  # model i's loss depends on model i's slices only
            optimizer.step()
            schedule.step()
            if eval_every and (step + 1) % eval_every == 0:
                with torch.no_grad():
                    test_loss, test_acc = evaluation_of(self.params, self.rates, self.x_test, self.y_test)
                    values = torch.stack([losses.detach(), test_loss, test_acc.double()]).tolist()  # one read-back
                for log, entry in zip(logs, zip(*values)):
                    log.append(entry)
        return logs

    def models(self) -> list[ref.Transformer]:
        """The eager modules with the ensemble's current weights (copied in, on the CPU)."""
        with torch.no_grad():
            for i, model in enumerate(self.eager):
                for name, param in model.named_parameters():
                    param.copy_(self.params[name][i])
        return self.eager


def train_population(p: int, d_model: int, steps: int, attn_rates: int, seeds: int,
                     last_only: bool = False, eval_every: int = 1, device: str = "cpu",
                     save_weights: Path | None = None, compile: bool = False) -> list[dict]:
    """torch_reference.train_population's rows, the models trained as one ensemble. A row's
    `seconds`: its share of the ensemble's training (1/N) plus its own final metrics."""
    runs = ref.runs_of(attn_rates, seeds)
    t0 = time.perf_counter()
    ensemble = Ensemble(p, d_model, runs, last_only, device=device)
    ensemble.train(steps, eval_every, compile=compile)
    share = (time.perf_counter() - t0) / len(runs)
    triples = ref.grad_sym_triples(p)
    rows = []
    for i, ((rate, seed), model, split) in enumerate(zip(runs, ensemble.models(), ensemble.splits)):
        t1 = time.perf_counter()
        rows.append({"attn_rate": rate, "seed": seed, **ref.final_metrics(model, split, triples)})
        rows[-1]["seconds"] = share + time.perf_counter() - t1
        ref.keep_weights(save_weights, i, model, seed)
    return ref.labelled(rows)
