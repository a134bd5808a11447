"""Imports run one way: kernels <- model <- training / inference, with no lazy import around a rule.

Each rule parses every Python file of a folder with ``ast`` and looks at every import in it: top-level ones,
ones inside functions (the way a circle is usually hidden) and ``importlib.import_module("...")`` /
``__import__("...")`` calls with a literal name (the way the kernels once registered with the dispatcher).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder -> top-level packages it must not import, and why.
RULES = {
    "nki_kernels": (("bmojo_neuron",), "the kernels stand alone; their torch bridges live in bmojo_neuron/ops/nki/"),
    "training": (("inference",), "training and inference both import the model, not each other"),
    "bmojo_neuron": (
        ("training", "inference", "benchmarks", "tools"),
        "the model never imports the programs built on it",
    ),
}
_DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``source``; relative imports are left out (they stay inside)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in _DYNAMIC_IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def violations(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            if module.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(folder.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("folder", sorted(RULES))
def test_folder_does_not_import_against_the_direction(folder):
    forbidden, why = RULES[folder]
    assert not violations(REPO / folder, forbidden), f"{folder}/ must not import {forbidden} ({why})"


@pytest.mark.parametrize(
    "planted",
    [
        "import bmojo_neuron.ops\n",
        "from bmojo_neuron.ops.dispatch import register\n",
        "def later():\n    from bmojo_neuron import ops\n",
        "import importlib\nimportlib.import_module('bmojo_neuron.ops.dispatch')\n",
        "__import__('bmojo_neuron')\n",
    ],
)
def test_a_planted_import_is_caught(tmp_path, planted):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "clean.py").write_text("import numpy\nfrom . import sibling\n")
    (tmp_path / "pkg" / "planted.py").write_text(planted)
    found = violations(tmp_path, ("bmojo_neuron",))
    assert len(found) == 1 and "planted.py" in found[0], found
