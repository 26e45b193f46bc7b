"""The package's folders are its layers: a module's layer is the subpackage it sits in (the
commands sit at the top), and imports only point down a layer, with no cycle, counting the
imports placed inside functions too (docs/architecture.md draws the tree)."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "phasescan"

# The order of the layers, lowest first, written once: a module may import modules of its own
# layer or of a lower one, never a higher. "commands" are the modules at the package's top.
LAYERS = ["core", "engine", "store", "analysis", "runner", "plots", "reports", "commands"]
COMMANDS = {"__init__", "__main__", "app", "overrides", "plot", "report", "evaluate", "merge"}
NOT_CODE = {"conf"}  # the Hydra config groups: YAML shipped in the wheel


def module_name(path: Path) -> str:
    """phasescan/engine/train.py -> engine.train; phasescan/plot.py -> plot."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer_of(module: str) -> str:
    return module.split(".")[0] if "." in module or module in LAYERS else "commands"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if p.relative_to(PACKAGE).parts[0] not in NOT_CODE}


def resolve(path: Path, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The package modules a `from ... import ...` in `path` names, as names like engine.train."""
    if node.level:  # relative: from the folder that holds `path`, one folder up per extra dot
        folder = list(path.relative_to(PACKAGE).parts[:-1])
        base = folder[:len(folder) - (node.level - 1)]
    elif (node.module or "").split(".")[0] == "phasescan":
        base = []
    else:
        return []
    parts = (node.module or "").split(".")
    prefix = base + [part for part in (parts[1:] if not node.level else parts) if part]
    found = []
    for alias in node.names:  # `from .engine import train` names a module, `from .x import f` a name of x
        candidate = ".".join(prefix + [alias.name])
        found.append(candidate if candidate in known else ".".join(prefix))
    return [f for f in found if f]


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.update(resolve(path, node, known))
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("phasescan."))
    return {f for f in found if f != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports_of(module, path, set(known)) for module, path in known.items()}


def test_every_folder_is_a_layer_and_the_top_holds_only_commands():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name not in NOT_CODE | {"__pycache__"}}
    assert folders <= set(LAYERS), f"a folder that is no layer: {sorted(folders - set(LAYERS))} (add it to LAYERS)"
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= COMMANDS, f"only commands sit at the top: move {sorted(top - COMMANDS)} into its layer's folder"


def test_every_import_names_a_module_that_exists():
    known = set(modules())
    assert {f"{a} imports {b}" for a, targets in graph().items() for b in targets if b not in known} == set()


def test_imports_only_point_down():
    level = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})"
              for a, targets in graph().items() for b in targets
              if level[layer_of(b)] > level[layer_of(a)]]
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


def test_the_graph_is_read():
    """The reader finds the imports it must (a guard against a test that checks nothing)."""
    edges = graph()
    assert {"core.config", "engine.train"} <= edges["runner.sweep"]
    assert "plots.draw" in edges["plot"] and "core" in layer_of("core.grid")


def test_the_core_layer_does_not_load_jax():
    """Every module of the core layer validates a sweep without importing JAX."""
    import subprocess
    import sys
    core = sorted(m for m in modules() if layer_of(m) == "core" and m != "core")
    code = (f"import sys; import {', '.join('phasescan.' + m for m in core)}; "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
