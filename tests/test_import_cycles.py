"""No two icrl_bench modules import each other, directly or round a loop.

Read statically from the source (nothing is imported): every import statement counts, at module
level, inside a function or under `TYPE_CHECKING`, because a cycle hidden in a function is still a
cycle in the design. A package's `__init__` is a module like any other; the implicit import of a
parent package when a submodule loads is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import icrl_bench

PACKAGE = Path(icrl_bench.__file__).parent


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], package_dir: Path = PACKAGE) -> dict[str, int]:
    """Every icrl_bench module `path` imports (the longest known prefix of each name), with its first line."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]  # a submodule, or a name in `base`
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One loop per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    edges = [f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph[a] if b in component]
    return "; ".join(edges)


def test_no_import_cycle_among_icrl_bench_modules():
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    loops = cycles(graph)
    assert not loops, "import cycles (move the shared piece to the module it belongs to): " + " | ".join(describe(c, graph) for c in loops)


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    from icrl_bench.b import thing\n",  # inside a function
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from icrl_bench import b\n",  # type-only
    ],
)
def test_the_check_sees_hidden_imports(source, tmp_path):
    """The detector itself: a loop closed by a function-level or type-only import is found."""
    package = tmp_path / "icrl_bench"
    package.mkdir()
    (package / "a.py").write_text(source)
    (package / "b.py").write_text("from icrl_bench.a import f\n")
    names = {"icrl_bench.a", "icrl_bench.b"}
    graph = {f"icrl_bench.{m}": imported_modules(package / f"{m}.py", names, package) for m in ("a", "b")}
    assert graph["icrl_bench.a"] == {"icrl_bench.b": 2 if source.startswith("def") else 3}
    assert cycles(graph) == [["icrl_bench.a", "icrl_bench.b"]]
