"""The traced-program cache (engine/compile_cache.py): a program traced once is loaded by later
compilations with the same fields and gives the same bits; a changed field, or a file that does
not load, traces again; nothing but the key decides which program runs."""
import jax
import numpy as np
import pytest
from conftest import TINY, compose

from phasescan.engine import chunk, compile_cache
from phasescan.engine.train import Spec
from phasescan.core import grid


@pytest.fixture
def traced_cache(tmp_path):
    """The compile cache pointed at a fresh folder for this test, then put back."""
    before = jax.config.jax_compilation_cache_dir
    compile_cache.enable(tmp_path / "cache")
    yield tmp_path / "cache" / compile_cache.TRACED
    jax.config.update("jax_compilation_cache_dir", before)


def trained(cfg, monkeypatch):
    """(metrics, how many times the model's functions were traced) of one tiny chunk."""
    traces = []
    make_program = chunk.make_program

    def counting(*args, **kwargs):
        program = make_program(*args, **kwargs)
        counted = lambda fn: (lambda *a: traces.append(1) or fn(*a))
        return program._replace(init=counted(program.init), advance=counted(program.advance),
                                measure=counted(program.measure))
    monkeypatch.setattr(chunk, "make_program", counting)
    runs = grid.expand(cfg)
    jax.clear_caches()  # as a new process: nothing traced in memory
    program = chunk.compile_chunk(Spec.from_run(runs[0]), len(runs), cfg["metrics"])
    return chunk.run_chunk(program, runs, len(runs)), len(traces)


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_traced_program_is_loaded_and_gives_the_bits_of_tracing(traced_cache, monkeypatch):
    cfg = compose(*TINY)
    jax.config.update("jax_compilation_cache_dir", None)  # the cache off: the plain jitted programs
    uncached, traced_off = trained(cfg, monkeypatch)
    jax.config.update("jax_compilation_cache_dir", str(traced_cache.parent))
    first, traced_first = trained(cfg, monkeypatch)
    files = sorted(traced_cache.iterdir())
    assert len(files) == 3 and traced_off > 0 and traced_first > 0  # init, advance, measure
    second, traced_second = trained(cfg, monkeypatch)
    assert traced_second == 0 and sorted(traced_cache.iterdir()) == files
    assert_same_bits(first, uncached)
    assert_same_bits(second, uncached)


def test_a_changed_field_traces_again(traced_cache, monkeypatch):
    """A field that keeps every input shape (so only the key can tell the programs apart)."""
    relu, _ = trained(compose(*TINY), monkeypatch)
    gelu, traces = trained(compose(*TINY, "model.act=gelu"), monkeypatch)
    assert traces > 0 and len(list(traced_cache.iterdir())) == 6
    assert not np.array_equal(gelu["train_loss"], relu["train_loss"])


def test_a_damaged_or_foreign_file_is_traced_again(traced_cache, monkeypatch):
    cfg = compose(*TINY)
    reference, _ = trained(cfg, monkeypatch)
    files = sorted(traced_cache.iterdir())
    files[0].write_bytes(b"not a program")
    files[1].write_bytes(files[2].read_bytes())  # another program's file: its inputs are not these
    again, traces = trained(cfg, monkeypatch)
    assert traces > 0
    assert_same_bits(again, reference)
    assert all(f.read_bytes() != b"not a program" for f in traced_cache.iterdir())
