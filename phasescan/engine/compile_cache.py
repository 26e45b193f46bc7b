"""The persistent compilation cache: compiled programs are kept on disk and reused by later
processes (reruns, resumed sweeps, Hydra multirun jobs), so each bucket compiles once per
machine instead of once per process. On by default (config key `compile_cache`); null or
false turns it off.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax

DEFAULT_DIR = "~/.cache/phasescan/jax"


def enable(directory: str | os.PathLike | None | bool) -> Path | None:
    """Point JAX's persistent cache at `directory` (created if needed); None/False: leave it off.

    Call before the first compilation of the process: JAX decides once whether the cache is used.
    """
    if directory in (None, False, "", "null", "none", "false"):
        return None
    path = Path(os.path.expanduser(str(directory)))
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program that took >= 0.5 s to compile (JAX's default is 1 s; a small
    # bucket's program compiles in about that, and a cache hit costs milliseconds).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
