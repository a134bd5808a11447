"""Every runnable module of the installed packages is a console script, and every script's target answers --help."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


def installed_packages() -> list[str]:
    """Top-level packages that `pip install` puts into site-packages (pyproject's find.include patterns)."""
    return [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]


def _has_main_guard(source: str) -> bool:
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [getattr(n, "id", None) for n in (node.test.left, *node.test.comparators)]
            if "__name__" in names:
                return True
    return False


def runnable_modules(packages: list[str], root: Path = REPO) -> set[str]:
    """Modules a user runs with ``python -m``: a ``__main__.py``, or a module with an ``if __name__ ==`` guard."""
    found = set()
    for package in packages:
        for path in (root / package).rglob("*.py"):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            if path.name == "__main__.py" or _has_main_guard(path.read_text()):
                found.add(module)
    return found


def test_every_runnable_module_is_a_console_script():
    targets = {target.partition(":")[0] for target in SCRIPTS.values()}
    missing = runnable_modules(installed_packages()) - targets
    assert not missing, f"runnable with python -m but not in [project.scripts]: {sorted(missing)}"


def test_a_module_without_a_script_is_caught(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tool.py").write_text("def main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n")
    (tmp_path / "pkg" / "library.py").write_text("NAME = '__main__'\n")
    assert runnable_modules(["pkg"], tmp_path) == {"pkg.tool"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_target_imports_and_answers_help(script, capsys):
    module, _, function = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {script}"), f"{script}: the usage line should name the installed command\n{out}"
