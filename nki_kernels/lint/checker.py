"""AST checks of NKI kernel source: the front end's Python subset, and every ``nki.*`` / ``nl.*`` / ``nisa.*`` use
against :mod:`.api_table`.

Why: the interpreter (like the official simulator) runs kernels as CPython, so it accepts constructs the
parsing NKI front end of SDK 2.27-2.32 rejects, and names or keywords that the real API does not have.

Python subset (every function body in a kernel module, helpers included, since helpers are inlined):
the statements and expressions of the front end's Python AST (KLR ``KLR/Python.lean``: const, name, attr,
tuple, list, subscript, slice, bool/bin/unary ops, compare, if-expression, call; pass, expr, assert, return,
assign, aug/ann-assign, if, for, break, continue), plus nested ``def`` (the 2.32 ``nl.fori_loop`` body form).
So: no raise/try/with/while/import/class/del/global, no comprehensions, generator expressions, lambda,
dict/set displays, f-strings, starred or walrus expressions; ``for`` targets are simple names; tuple
assignments bind names only; ``is`` / ``is not`` compare with ``None`` only; builtins are the front end's.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from pathlib import Path

from .api_table import NAMESPACES, SOURCES, TENSOR_METHODS, Signature

# Python builtins the front end provides (KLR ``KLR/Trace/Python.lean`` / ``Trace/NKI.lean``); ``math.*`` too.
ALLOWED_BUILTINS = frozenset(
    "isinstance type slice print min max abs str bool int float divmod tuple list dict len range".split()
)
FORBIDDEN_STATEMENTS = {
    ast.Raise: "raise (use assert in kernels; raise ValueError in the host wrapper)",
    ast.Try: "try/except",
    ast.With: "with",
    ast.While: "while loop (use a bounded for, or nl.while_loop)",
    ast.Import: "import inside a kernel function",
    ast.ImportFrom: "import inside a kernel function",
    ast.ClassDef: "class definition inside a kernel function",
    ast.Delete: "del",
    ast.Global: "global",
    ast.Nonlocal: "nonlocal",
    ast.AsyncFunctionDef: "async def",
}
FORBIDDEN_EXPRESSIONS = {
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Lambda: "lambda",
    ast.Dict: "dict display (use a tuple and index constants)",
    ast.Set: "set display",
    ast.JoinedStr: "f-string",
    ast.Starred: "starred expression",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
}
for _name in ("TryStar", "Match"):  # newer Pythons
    if hasattr(ast, _name):
        FORBIDDEN_STATEMENTS[getattr(ast, _name)] = _name.lower()

# Modules whose names a kernel module may bind to the NKI API.
NKI_MODULES = {"nki": "nki", "nki.isa": "nki.isa", "nki.language": "nki.language"}
# ``from nki_kernels._nki import nki, nl, nisa``: the project's switch between the SDK and the interpreter.
SHIM_NAMES = {"nki": "nki", "nl": "nki.language", "nisa": "nki.isa"}
SHIM_MODULE = "nki_kernels._nki"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    col: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.rule} {self.message}"


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> NKI namespace ("nki", "nki.isa", "nki.language") from the module's imports."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in NKI_MODULES:
                    out[a.asname or a.name.split(".")[0]] = NKI_MODULES[a.name if a.asname else "nki"]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if node.module == SHIM_MODULE and a.name in SHIM_NAMES:
                    out[a.asname or a.name] = SHIM_NAMES[a.name]
                elif node.module == "nki" and f"nki.{a.name}" in NKI_MODULES:
                    out[a.asname or a.name] = f"nki.{a.name}"
    return out


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, aliases: dict[str, str]):
        self.path = path
        self.aliases = aliases
        self.out: list[Violation] = []
        self.depth = 0  # > 0 inside a function body

    def add(self, node, rule, message):
        self.out.append(Violation(self.path, node.lineno, node.col_offset + 1, rule, message))

    # ---- functions: the subset applies inside their bodies --------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef):
        for d in node.decorator_list:
            self.visit(d)
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)
        if node.args.vararg or node.args.kwarg:
            self.add(node, "NKI101", f"{node.name}: *args / **kwargs parameters")
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1

    def generic_visit(self, node):
        if self.depth:
            for kind, what in FORBIDDEN_STATEMENTS.items():
                if isinstance(node, kind):
                    self.add(node, "NKI100", f"{what} is outside the NKI front end's Python subset")
            for kind, what in FORBIDDEN_EXPRESSIONS.items():
                if isinstance(node, kind):
                    self.add(node, "NKI100", f"{what} is outside the NKI front end's Python subset")
        super().generic_visit(node)

    def visit_For(self, node: ast.For):
        if self.depth and not isinstance(node.target, ast.Name):
            self.add(node, "NKI102", "for-loop target must be a simple name (index a tuple in the body instead)")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign):
        if self.depth:
            for t in node.targets:
                if isinstance(t, (ast.Tuple, ast.List)) and not _names_only(t):
                    self.add(node, "NKI103", "tuple assignment may bind names only (assign subscripts one by one)")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare):
        if self.depth:
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.Is, ast.IsNot)) and not (_is_none(left) or _is_none(right)):
                    self.add(node, "NKI104", "is / is not may only compare with None (use == / !=)")
                left = right
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call):
        if self.depth and isinstance(node.func, ast.Name):
            name = node.func.id
            if hasattr(builtins, name) and name not in ALLOWED_BUILTINS:
                self.add(node, "NKI105", f"builtin {name}() is not among the front end's builtins")
        chain = _chain(node.func)
        if chain and chain[0] in self.aliases:
            self._check_api_call(node, self.aliases[chain[0]], chain[1:])
        elif isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_METHODS and self.depth:
            self._check_signature(node, f".{node.func.attr}", TENSOR_METHODS[node.func.attr])
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute):
        chain = _chain(node)
        if chain and chain[0] in self.aliases:
            self._check_api_name(node, self.aliases[chain[0]], chain[1:])
        # do not descend into the chain's own Attribute children: the whole chain was checked here
        if not chain:
            self.generic_visit(node)

    # ---- API table ------------------------------------------------------------------------------------
    def _check_api_name(self, node, namespace: str, rest: list[str]) -> None:
        functions, values = NAMESPACES[namespace]
        if not rest:
            return
        head = rest[0]
        if head in functions:
            if len(rest) > 1:
                self.add(node, "NKI201", f"{namespace}.{'.'.join(rest)}: {head} is a function")
            return
        if head not in values:
            self.add(node, "NKI200", f"{namespace}.{head} is not in the NKI API table ({SOURCES['2.32']})")
            return
        members = values[head]
        if len(rest) > 1 and (members is None or rest[1] not in members):
            self.add(node, "NKI200", f"{namespace}.{head}.{rest[1]} is not in the NKI API table")

    def _check_api_call(self, node: ast.Call, namespace: str, rest: list[str]) -> None:
        functions, _ = NAMESPACES[namespace]
        if len(rest) == 1 and rest[0] in functions:
            self._check_signature(node, f"{namespace}.{rest[0]}", functions[rest[0]])
        # anything else (unknown names) is reported when generic_visit reaches node.func

    def _check_signature(self, node: ast.Call, name: str, sig: Signature) -> None:
        positional = list(sig.required) + [n for n, _ in sig.optional]
        if len(node.args) > len(positional) and not sig.varargs:
            self.add(node, "NKI202", f"{name}: {len(node.args)} positional arguments, it takes {len(positional)}")
        given = set(positional[: len(node.args)])
        for k in node.keywords:
            if k.arg is None:
                self.add(node, "NKI100", f"{name}: **kwargs expansion is outside the front end's subset")
                continue
            if k.arg not in sig.params and not sig.varkw:
                self.add(node, "NKI203", f"{name}: no parameter {k.arg!r} ({SOURCES[sig.source]})")
            given.add(k.arg)
        missing = [p for p in sig.required if p not in given]
        if missing:
            self.add(node, "NKI204", f"{name}: missing required argument(s) {', '.join(missing)}")


def _names_only(t) -> bool:
    return all(isinstance(e, ast.Name) or (isinstance(e, (ast.Tuple, ast.List)) and _names_only(e)) for e in t.elts)


def _is_none(e) -> bool:
    return isinstance(e, ast.Constant) and e.value is None


def _chain(node) -> list[str]:
    """``a.b.c`` -> ["a", "b", "c"]; [] if the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return []
    return [node.id, *reversed(parts)]


def lint_source(source: str, path: str = "<string>") -> list[Violation]:
    """All violations in one module's source."""
    tree = ast.parse(source, filename=path)
    checker = _Checker(path, _aliases(tree))
    checker.visit(tree)
    return sorted(set(checker.out), key=lambda v: (v.line, v.col, v.rule))


def lint_paths(paths) -> list[Violation]:
    """Lint ``.py`` files and directories (recursively)."""
    out: list[Violation] = []
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            out += lint_source(f.read_text(), str(f))
    return out
