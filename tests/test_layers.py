"""The package's modules form layers whose imports only point down, with no cycle, counting the
imports placed inside functions too (docs/architecture.md draws the layers)."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "phasescan"

# Lowest first. A module may import modules of its own layer or of a lower one, never a higher.
LAYERS = {
    "spec": ["version", "tasks", "classify", "config", "grid", "shard", "progress"],  # no JAX
    "engine": ["model", "linear", "data", "precision", "loss", "metrics", "train", "chunk",
               "compile_cache", "determinism"],
    "storage": ["results", "history", "weights", "checkpoint", "tracking"],
    "analysis": ["boundary", "table", "refine"],
    "orchestration": ["sweep", "retrain"],
    "figures": ["style", "plot_beyond", "plot"],
    "commands": ["__main__", "__init__", "app", "overrides", "evaluate", "merge", "report"],
}
LEVEL = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
LAYER_OF = {module: name for name, modules in LAYERS.items() for module in modules}


def imports_of(path: Path) -> set[str]:
    """The package modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import x / from .x import y
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("phasescan"):
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("phasescan."))
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert sorted(graph()) == sorted(LEVEL), "add the new module to LAYERS (and docs/architecture.md)"


def test_imports_only_point_down():
    upward = [f"{a} ({LAYER_OF[a]}) imports {b} ({LAYER_OF[b]})"
              for a, targets in graph().items() for b in targets if LEVEL[b] > LEVEL[a]]
    assert upward == []


def test_no_import_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_spec_layer_does_not_load_jax():
    """config, grid and the rest of the spec layer validate a sweep without importing JAX."""
    import subprocess
    import sys
    code = ("import sys; import phasescan.config, phasescan.grid, phasescan.shard; "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
