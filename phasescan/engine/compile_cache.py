"""The persistent caches: a later process (a rerun, a resumed sweep, a Hydra multirun job)
reuses what an earlier one built, so each bucket traces and compiles once per machine instead
of once per process. On by default (config key `compile_cache`); null or false turns both off.

Two layers, one folder:
  * JAX's compilation cache (the folder itself): compiled executables, keyed by JAX on the
    lowered program, so it can never return a wrong one; it saves XLA's compilation.
  * traced programs (`traced/` inside it, this module's): each program serialised with
    `jax.export` after its first tracing and lowering, so a later process skips Python tracing
    and lowering too (about 1 s per process on a CPU: docs/benchmarks.md). The key must name
    everything that changes the program (`program_key`): the caller's fields (the bucket's
    spec, chunk size, metric options, segment, grouping), the devices, the versions of JAX,
    jaxlib, flax and optax, JAX's configuration, XLA_FLAGS, and the source of the whole
    phasescan package. A file that does not load, or whose inputs are not the call's, is
    traced again and replaced: never a wrong program.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import jax

DEFAULT_DIR = "~/.cache/phasescan/jax"
TRACED = "traced"  # subfolder for the serialised programs
FORMAT = 1  # of a traced file: bump when its layout changes


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


def traced_dir() -> Path | None:
    """Where traced programs are kept: beside the compiled ones (None when the cache is off)."""
    directory = jax.config.jax_compilation_cache_dir
    return Path(directory) / TRACED if directory else None


@functools.lru_cache(maxsize=1)
def environment_key() -> str:
    """What changes a traced program besides the caller's fields, hashed once per process."""
    digest = hashlib.sha256()
    for name in ("jax", "jaxlib", "flax", "optax"):
        try:
            digest.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=?;".encode())
    # JAX's options change tracing (x64, the PRNG, default precisions); the cache's own do not.
    options = sorted((k, repr(v)) for k, v in jax.config.values.items()
                     if "cache" not in k and "log" not in k)
    digest.update(repr(options).encode())
    digest.update(os.environ.get("XLA_FLAGS", "").encode())
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):  # any source change: traced again
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_key(name: str, fields: Any, devices: list) -> str:
    """The file name of one traced program: `fields` (a repr-stable description of everything
    the caller builds the program from), the devices it runs on, and environment_key()."""
    where = [(d.platform, d.device_kind, d.id) for d in devices]
    text = repr((FORMAT, name, fields, where, environment_key()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_program(fn: Callable, args: tuple, *, in_shardings, out_shardings, donate_argnums=(),
                    key: str | None = None):
    """jax.jit(fn, ...) compiled for the abstract `args`: (callable of pytrees, abstract output).

    With `key` and the cache on, through a traced program kept in traced_dir(): loaded if there,
    else traced, exported and saved. Without, the plain jitted program."""
    directory = traced_dir() if key else None
    if directory is None:
        lowered = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                          donate_argnums=donate_argnums).lower(*args)
        return lowered.compile(), jax.tree_util.tree_map(_abstract, lowered.out_info)
    from jax import export  # only here: its serialisation needs `flatbuffers`

    leaves, in_tree = jax.tree_util.tree_flatten(args)
    # One sharding per leaf (jit's shardings are a prefix of the argument tree).
    flat_in = _per_leaf(in_shardings, args)
    donated = _leaf_indices(donate_argnums, args)
    path = directory / f"{key}.bin"
    loaded = _load(path, leaves)
    if loaded is None:
        out = {}

        def flat(*flat_args):
            result = fn(*jax.tree_util.tree_unflatten(in_tree, flat_args))
            out_leaves, out["tree"] = jax.tree_util.tree_flatten(result)
            return out_leaves
        exported = export.export(jax.jit(flat, in_shardings=flat_in, out_shardings=out_shardings,
                                         donate_argnums=donated))(*leaves)
        loaded = exported, out["tree"]
        _save(path, exported, out["tree"])
    exported, out_tree = loaded
    compiled = jax.jit(exported.call, in_shardings=flat_in, out_shardings=out_shardings,
                       donate_argnums=donated).lower(*leaves).compile()

    def call(*call_args):
        return jax.tree_util.tree_unflatten(out_tree, compiled(*jax.tree_util.tree_leaves(call_args)))
    return call, jax.tree_util.tree_unflatten(out_tree, [_abstract(a) for a in exported.out_avals])


def _abstract(value) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(value.shape, value.dtype)


def _per_leaf(shardings, args: tuple) -> tuple:
    if not isinstance(shardings, (tuple, list)):
        return (shardings,) * len(jax.tree_util.tree_leaves(args))
    return tuple(s for s, a in zip(shardings, args) for _ in jax.tree_util.tree_leaves(a))


def _leaf_indices(argnums, args: tuple) -> tuple:
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    indices, start = [], 0
    for i, a in enumerate(args):
        n = len(jax.tree_util.tree_leaves(a))
        if i in argnums:
            indices += range(start, start + n)
        start += n
    return tuple(indices)


def _load(path: Path, leaves: list):
    """(exported, output tree) from a traced file, or None if it is missing, damaged or was
    traced for other inputs (a hash collision or a hand-copied file: traced again)."""
    try:
        from jax import export
        with open(path, "rb") as f:
            saved = pickle.load(f)
        if saved.get("format") != FORMAT:
            return None
        exported = export.deserialize(saved["exported"])
        want = [(tuple(x.shape), x.dtype) for x in leaves]
        if [(tuple(a.shape), a.dtype) for a in exported.in_avals] != want:
            return None
        return exported, saved["out_tree"]
    except Exception:  # noqa: BLE001 - any unreadable file is only a cache miss
        return None


def _save(path: Path, exported, out_tree) -> None:
    """Write atomically (two sweeps on one cache write the same bytes; the last rename wins)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps({"format": FORMAT, "exported": exported.serialize(),
                                      "out_tree": out_tree}))
        os.replace(tmp, path)
    except (OSError, ImportError):  # a full disk or no flatbuffers: nothing kept, nothing lost
        pass
