"""The package's import graph, read from the source (AST, nothing imported): no cycles between modules or
between subpackages, and no function-local imports of the package (they hid cycles before).

A function-local import of another heavy library (dlib, gradio, onnxruntime) is fine; one of ``gpen_fewshot``
itself is only allowed in ``ALLOWED_LOCAL`` with the reason beside it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gpen_fewshot"
ALLOWED_LOCAL: dict[str, str] = {}  # "module -> imported module": why it must stay local


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
    return found or ([source] if source in modules else [])


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> imported package modules (every import, wherever it is), and the local imports found."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    local = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = set()
        for statement in tree.body:  # module level, including `if TYPE_CHECKING:` / `try:` blocks
            top_level.update(id(n) for n in ast.walk(statement)
                             if not isinstance(statement, ast.FunctionDef | ast.ClassDef))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, module, path.name == "__init__.py", modules):
                if target == module or module.startswith(target + "."):
                    continue  # a package's own __init__ is loaded before its modules anyway
                edges[module].add(target)
                if id(node) not in top_level:
                    local.append(f"{module} -> {target}")
    return edges, local


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_in_a_circle() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_subpackages_form_no_cycle() -> None:
    edges, _ = _graph()
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if _subpackage(module) != _subpackage(target) and _subpackage(target) != "gpen_fewshot":
                packages[_subpackage(module)].add(_subpackage(target))
    assert _cycles(packages) == []


def test_no_function_local_imports_of_the_package() -> None:
    _, local = _graph()
    assert [edge for edge in local if edge not in ALLOWED_LOCAL] == []


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
