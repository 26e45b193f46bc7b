"""Bit-reproducible GPU runs. XLA on a GPU adds into an array from many threads at once with
atomics (the embedding gradient is a scatter-add over every training pair, the metrics use
segment sums); the order of those additions, hence the rounding, changes from run to run, and a
20,000-step training run amplifies one rounding difference into a different model. On the
paper's sweep (tf32, one H100) the same config run twice gave different labels at attention
rate 0 (docs/reproduction.md). XLA's deterministic-ops flag replaces the atomics by ordered
additions. CPU programs are deterministic already; the flag does nothing there.
"""
from __future__ import annotations

import os

FLAG = "--xla_gpu_deterministic_ops=true"


def enable(on: bool) -> bool:
    """Add XLA's deterministic-ops flag to XLA_FLAGS (once). Call before JAX starts its backend
    (the first computation or jax.devices()): XLA reads the variable then, and only then."""
    if on:
        flags = os.environ.get("XLA_FLAGS", "").split()
        if FLAG not in flags:
            os.environ["XLA_FLAGS"] = " ".join(flags + [FLAG])
    return on
