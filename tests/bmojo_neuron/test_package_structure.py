"""The shape of the package (issue 17), read from the source with ``ast``: imports run one way with no circle
and no import inside a function, no module is longer than 600 lines, and a layer type's name is compared
nowhere: :data:`bmojo_neuron.layers.MIXERS` is the one place that maps names to behaviour."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bmojo_neuron.configuration_bmojo import LAYER_TYPES
from bmojo_neuron.layers import MIXERS

PACKAGE = Path(__file__).resolve().parents[2] / "bmojo_neuron"
MAX_LINES = 600
# The Neuron SDK's packages exist only on a Neuron host: importing them at module level would break every
# import of the package elsewhere, so the code that needs them imports them where it runs.
NEURON_SDK = ("torch_neuronx", "torch_xla", "nki", "neuronxcc", "neuronx_distributed")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports at module level (``from . import x`` names module ``x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in known and m != name}


def test_no_import_circle():
    mods = modules()
    graph = {name: imported_modules(name, path, set(mods)) for name, path in mods.items()}
    # A package's __init__ importing its own submodules is not a circle: drop parent-package edges.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep) :] + [dep] if dep in trail else [node, dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_import_inside_a_function():
    lazy = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy += [
                    f"{name}:{sub.lineno}"
                    for sub in ast.walk(node)
                    if isinstance(sub, (ast.Import, ast.ImportFrom)) and not _imports_the_sdk(sub)
                ]
    assert not lazy, f"imports inside functions (a circle dodged, or a cost hidden): {lazy}"


def _imports_the_sdk(node: ast.Import | ast.ImportFrom) -> bool:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return all(n.split(".")[0] in NEURON_SDK for n in names)


def test_modules_are_short():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _names_a_layer_type(node: ast.AST) -> bool:
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return any(isinstance(e, ast.Constant) and e.value in LAYER_TYPES for e in elts)


def test_layer_types_are_never_compared_by_name():
    compared = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(_names_a_layer_type(c) for c in [node.left, *node.comparators]):
                compared.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not compared, f"layer types compared by name outside the MIXERS table: {compared}"


def test_every_layer_type_has_a_mixer():
    assert tuple(MIXERS) == LAYER_TYPES
    for layer_type, mixer in MIXERS.items():
        assert callable(getattr(mixer, "empty_state", None)), f"{layer_type}: {mixer.__name__} has no empty_state"
